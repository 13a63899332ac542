#!/usr/bin/env python
"""Same as `yolo-attn bench ...` (for people who prefer scripts); see `yolo-attn help`.

    python scripts/bench.py attention sizes=400,1600 reps=3
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported: no network probe
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolo_attn.cli import entrypoint  # noqa: E402

if __name__ == "__main__":
    sys.exit(entrypoint(["bench", *sys.argv[1:]]))
