"""Benchmarks of shoal (run as scripts; not part of the installed package)."""
