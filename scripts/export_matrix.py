#!/usr/bin/env python
"""Export matrix (shipped config x format, with runtime parity) as a markdown table; see yolo_attn.bench.export_matrix.

    nice -n 19 python scripts/export_matrix.py                      # every config, every format -> docs/EXPORT.md
    python scripts/export_matrix.py --configs yolov5n-local.yaml --cells onnx "onnx dynamic" --out /tmp/m.md
"""

import argparse
import os
import shlex
import sys
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported: no network probe
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from yolo_attn.bench.export_matrix import CELLS, export_matrix, write_export_matrix  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="*", help="config names (default: every shipped config, scale n)")
    parser.add_argument("--cells", nargs="*", choices=[c.name for c in CELLS], help="columns (default: all)")
    parser.add_argument("--imgsz", type=int, default=160, help="export size")
    parser.add_argument("--out", default=str(REPO / "docs" / "EXPORT.md"), help="markdown output")
    args = parser.parse_args()
    rows = export_matrix(args.configs, args.cells, args.imgsz)
    command = "python scripts/export_matrix.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(write_export_matrix(rows, args.out, command.strip(), args.imgsz))
    return 0


if __name__ == "__main__":
    sys.exit(main())
