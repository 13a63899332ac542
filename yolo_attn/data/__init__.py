"""Datasets that yolo_attn makes itself (nothing is ever downloaded)."""

from .shapes import SHAPE_CLASSES, make_shapes_dataset

__all__ = ["SHAPE_CLASSES", "make_shapes_dataset"]
