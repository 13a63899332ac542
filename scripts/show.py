#!/usr/bin/env python
"""Same as `yolo-attn show ...` (for people who prefer scripts); see `yolo-attn help`.

    python scripts/show.py pattern=local window=3 size=8x8
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported: no network probe
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolo_attn.cli import entrypoint  # noqa: E402

if __name__ == "__main__":
    sys.exit(entrypoint(["show", *sys.argv[1:]]))
