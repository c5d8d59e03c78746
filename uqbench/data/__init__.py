"""Benchmarks: real data found on a search path, never silently substituted."""

from uqbench.data.benchmark import BenchmarkData

__all__ = ["BenchmarkData"]
