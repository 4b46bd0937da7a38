"""Benchmarks: scripts that print Markdown tables (speed never goes into unit tests)."""
