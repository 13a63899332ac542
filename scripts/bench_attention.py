#!/usr/bin/env python
"""Benchmark the attention patterns on CPU and write benchmarks/attention.{md,csv,png}.

Thin wrapper over :func:`yolo_attn.bench.attention.run_attention_benchmark`.

Examples:
    python scripts/bench_attention.py --sizes 400 1600 6400 14400 --repeats 7
"""

from __future__ import annotations

import argparse

from yolo_attn.bench.attention import DEFAULT_OPTIONS, LEARNED, run_attention_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[400, 1600, 6400, 14400], help="token counts N")
    names = [*DEFAULT_OPTIONS, *LEARNED]
    parser.add_argument("--patterns", nargs="+", default=names, choices=names)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds per size")
    parser.add_argument("--out-dir", default="benchmarks")
    parser.add_argument("--no-flex", action="store_true", help="skip compiled FlexAttention")
    args = parser.parse_args()
    run_attention_benchmark(args.sizes, args.patterns, args.repeats, args.out_dir, flex=not args.no_flex)


if __name__ == "__main__":
    main()
