#!/usr/bin/env python
"""Same as `yolo-attn train key=value ...` (for people who prefer scripts); see `yolo-attn help`.

    python scripts/train.py model=yolov5n-c3tr.yaml data=data/shapes.yaml epochs=50
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported: no network probe
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolo_attn.cli import entrypoint  # noqa: E402

if __name__ == "__main__":
    sys.exit(entrypoint(["train", *sys.argv[1:]]))
