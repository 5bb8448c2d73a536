"""Benchmarks: scripts that print figures (see docs). A package only so that a test can use
bench_ratelimit's worker processes as its load."""
