"""Datasets that yolo_attn makes itself (nothing is ever downloaded)."""

from .shapes import (
    DEFAULT_SPEC,
    SHAPE_CLASSES,
    data_dir,
    ensure_generated,
    make_shapes_dataset,
    render_image,
    shapes_dataset,
)

__all__ = [
    "DEFAULT_SPEC",
    "SHAPE_CLASSES",
    "data_dir",
    "ensure_generated",
    "make_shapes_dataset",
    "render_image",
    "shapes_dataset",
]
