"""Benchmarks of the pure-numpy HERON core (trainer/heron.py)."""
