"""Thin entry points: `python -m jobs.<stage>`."""
