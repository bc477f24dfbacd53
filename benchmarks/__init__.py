"""Benchmarks: scripts that start real pieces and print numbers (see scripts/bench)."""
