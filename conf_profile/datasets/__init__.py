"""Adapters for public data sets (MovieLens 100K) into the log and truth formats."""
