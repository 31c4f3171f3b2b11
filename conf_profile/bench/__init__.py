"""Benchmark plumbing: timing and memory measurement, single-process baselines the benchmarks compare with."""
