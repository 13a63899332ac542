"""yolo_attn: self-attention building blocks for YOLOv5 detectors, as an ultralytics plugin.

Importing this package registers every yolo_attn block with ultralytics, so YAML model configs can name them.
"""

from __future__ import annotations

# --- the `yolo-attn` command is offline by default; this must run before ultralytics is imported (yolo_attn/cli.py)
import os as _os
import sys as _sys

if _os.path.basename(_sys.argv[0] if _sys.argv else "").startswith("yolo-attn") or any(
    a == "-m" and m in {"yolo_attn.cli", "yolo_attn"} for a, m in zip(getattr(_sys, "orig_argv", []), getattr(_sys, "orig_argv", [])[1:])
):
    _os.environ.setdefault("YOLO_OFFLINE", "1")
    _os.environ.setdefault("YOLO_AUTOINSTALL", "0")
# ---

from . import blocks  # noqa: F401  (registers the blocks)
from .attention import PATTERNS, Attention, attend, pattern_mask
from .integration import (
    YOLO,
    AttnDetectionTrainer,
    YamlConfigError,
    allow_package_classes,
    register_block,
    registered_blocks,
)

__version__ = "0.1.0"
__all__ = [
    "PATTERNS",
    "YOLO",
    "Attention",
    "AttnDetectionTrainer",
    "YamlConfigError",
    "attend",
    "pattern_mask",
    "register_block",
    "registered_blocks",
    "__version__",
]

allow_package_classes()
