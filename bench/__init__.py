"""Benchmarks against the real servers on loopback: `make bench` (see bench/run.py)."""
