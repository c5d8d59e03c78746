"""Benchmarks: real data found on a search path, never silently substituted."""

from uqbench.data.benchmark import BenchmarkData
from uqbench.data.ood import load_ood_images, parse_ood_option
from uqbench.data.registry import (
    BENCHMARKS,
    DEFAULT_BENCHMARK,
    BenchmarkSpec,
    list_benchmarks,
    load_benchmark,
)

__all__ = [
    "BENCHMARKS",
    "DEFAULT_BENCHMARK",
    "BenchmarkData",
    "BenchmarkSpec",
    "list_benchmarks",
    "load_benchmark",
    "load_ood_images",
    "parse_ood_option",
]
