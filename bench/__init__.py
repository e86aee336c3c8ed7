"""Benchmarks and the load-test harness."""
