"""Benchmarks: ``python benchmarks/run.py`` writes latency / throughput / memory / FLOP reports."""
