"""yolo_attn: self-attention building blocks for YOLOv5 detectors, as an ultralytics plugin.

Importing this package registers every yolo_attn block with ultralytics, so YAML model configs can name them.
"""

from __future__ import annotations

import os as _os
import sys as _sys


def _cli_offline_defaults() -> None:
    """Make the ``yolo-attn`` command offline by default (``YOLO_OFFLINE=1``, ``YOLO_AUTOINSTALL=0``).

    Runs here because the console script imports this package (and so ultralytics, which probes the network at
    import) before ``yolo_attn.cli`` itself; a user's own setting of either variable wins. Library use is unaffected.
    """
    argv = getattr(_sys, "orig_argv", None) or _sys.argv
    program = _os.path.basename(_sys.argv[0]) if _sys.argv else ""
    as_module = any(a == "-m" and m in {"yolo_attn", "yolo_attn.cli"} for a, m in zip(argv, argv[1:]))
    if program.startswith("yolo-attn") or as_module:
        _os.environ.setdefault("YOLO_OFFLINE", "1")
        _os.environ.setdefault("YOLO_AUTOINSTALL", "0")


_cli_offline_defaults()

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
from .transfer import TransferError

__version__ = "0.1.0"
__all__ = [
    "PATTERNS",
    "YOLO",
    "Attention",
    "AttnDetectionTrainer",
    "TransferError",
    "YamlConfigError",
    "attend",
    "pattern_mask",
    "register_block",
    "registered_blocks",
    "__version__",
]

allow_package_classes()
