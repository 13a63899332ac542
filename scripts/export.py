#!/usr/bin/env python
"""Same as `yolo-attn export key=value ...` (for people who prefer scripts); see `yolo-attn help`.

    python scripts/export.py model=best.pt format=onnx
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported: no network probe
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolo_attn.cli import entrypoint  # noqa: E402

if __name__ == "__main__":
    sys.exit(entrypoint(["export", *sys.argv[1:]]))
