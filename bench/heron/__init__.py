"""Benchmarks of the pure-numpy HERON core (trainer/core/heron.py)."""
