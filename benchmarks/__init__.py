"""Speed and memory benchmarks (not tests): ``python -m benchmarks.throughput``."""
