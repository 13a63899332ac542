"""Benchmark library: scripts/ and the CLI are thin wrappers over these functions."""

from .attention import run_attention_benchmark

__all__ = ["run_attention_benchmark"]
