"""yolo_attn: self-attention building blocks for YOLOv5 detectors, as an ultralytics plugin.

Importing this package registers every yolo_attn block with ultralytics, so YAML model configs can name them.
"""

from __future__ import annotations

from . import blocks  # noqa: F401  (registers the blocks)
from .integration import (
    YOLO,
    AttnDetectionTrainer,
    YamlConfigError,
    allow_package_classes,
    register_block,
    registered_blocks,
)

__version__ = "0.1.0"
__all__ = ["YOLO", "AttnDetectionTrainer", "YamlConfigError", "register_block", "registered_blocks", "__version__"]

allow_package_classes()
