"""Peer implementations in other frameworks, for side-by-side benchmarks (optional dependencies)."""
