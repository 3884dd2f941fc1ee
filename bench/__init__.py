"""Benchmarks (see BENCHMARKS.md): `make bench`, or `make bench-smoke` for seconds-long runs."""
