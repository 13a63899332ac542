"""Benchmark library: scripts/ and the CLI are thin wrappers over these functions."""
