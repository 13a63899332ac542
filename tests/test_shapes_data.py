"""The synthetic shapes data: every label is the tight box of a visible object, splits never share images.

The geometry check is independent of how the generator computes its boxes: on the drawn image (before JPEG), a
label is right when some colour of its box touches all four box edges and (almost) never appears on the one-pixel
ring just outside it: the tight bounding box of a solid-colour object. Swapped or shifted coordinates fail it.
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

from yolo_attn.data import SHAPE_CLASSES, make_shapes_dataset
from yolo_attn.data import shapes


def _is_tight_box(img: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> bool:
    region = img[y0:y1, x0:x1].reshape(-1, 3)
    colours, counts = np.unique(region, axis=0, return_counts=True)
    for colour in colours[counts >= 16]:  # the generator keeps objects of 16 visible pixels or more
        hit = np.all(img == colour, axis=-1)
        inside = hit[y0:y1, x0:x1]
        if not (inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()):
            continue
        ring = hit[max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1].sum() - inside.sum()
        if ring <= 2:  # a background pixel may match the colour by chance
            return True
    return False


def test_labels_are_tight_boxes_of_the_visible_objects():
    rng = np.random.default_rng(7)
    size, checked = 96, 0
    for _ in range(12):
        img, labels = shapes._draw_image(size, rng, 6)
        for cls, cx, cy, w, h in labels:
            assert cls in range(len(SHAPE_CLASSES)) and 0 < w <= 1 and 0 < h <= 1
            box = [round(v * size) for v in (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)]
            assert _is_tight_box(img, *box), (cls, cx, cy, w, h)
            checked += 1
    assert checked >= 30


def test_written_dataset_has_distinct_splits_and_valid_labels(tmp_path):
    data = make_shapes_dataset(tmp_path / "ds", n_train=4, n_val=4, imgsz=64, seed=5)
    root = data.parent
    digests = {}
    for split in ("train", "val"):
        images = sorted((root / "images" / split).glob("*.jpg"))
        assert len(images) == 4
        for image in images:
            assert cv2.imread(str(image)).shape == (64, 64, 3)
            digests[f"{split}/{image.name}"] = hashlib.sha256(image.read_bytes()).hexdigest()
            for line in (root / "labels" / split / f"{image.stem}.txt").read_text().splitlines():
                cls, *box = line.split()
                assert int(cls) in range(len(SHAPE_CLASSES)) and all(0 <= float(v) <= 1 for v in box), line
    assert len(set(digests.values())) == len(digests), "train and val share images"
