"""conf-profile: label-free user profiling with confidence-driven LLM reasoning."""

import os

# pyarrow's jemalloc pool rather than its default (mimalloc), in every process that imports this package
# before pyarrow (the jobs' drivers, and the Ray processes they start): mimalloc kept each aggregate
# bucket's freed pages for the next, and the driver's memory climbed with the number of buckets (the
# dataflow benchmark at 1M users: aggregate's peak 838 MiB with mimalloc, 635 MiB with jemalloc). The pool
# is chosen when pyarrow loads, so it is set here; a value already in the environment wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
