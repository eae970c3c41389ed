"""Experiments and benchmarks for couae-jax (run as `python -m experiments.X`)."""
