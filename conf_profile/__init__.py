"""conf-profile: label-free user profiling with confidence-driven LLM reasoning."""
