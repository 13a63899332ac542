"""A deterministic synthetic detection dataset: coloured shapes on cluttered backgrounds, YOLO txt labels.

Each image holds several objects of a few shape classes at varied scales and aspect ratios, drawn over a noisy
gradient background with line/blob clutter; later objects may partly occlude earlier ones (a box whose visible area
drops below a third is removed from the labels). Everything is drawn with OpenCV from a seeded NumPy generator, so
the same arguments always give byte-identical files.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

__all__ = ["SHAPE_CLASSES", "make_shapes_dataset"]

SHAPE_CLASSES = ("circle", "square", "triangle", "star", "cross")


def _polygon(cls: str, cx: float, cy: float, r: float, rng: np.random.Generator) -> np.ndarray:
    """Outline points of a shape centred at (cx, cy) with radius r, randomly rotated."""
    a0 = rng.uniform(0, 2 * np.pi)
    if cls == "square":
        ang, rad = a0 + np.arange(4) * np.pi / 2, np.full(4, r)
    elif cls == "triangle":
        ang, rad = a0 + np.arange(3) * 2 * np.pi / 3, np.full(3, r)
    elif cls == "star":
        ang, rad = a0 + np.arange(10) * np.pi / 5, np.where(np.arange(10) % 2, 0.45 * r, r)
    else:  # cross: 12-point plus sign
        u, v = r, r / 3
        pts = np.array([[-v, -u], [v, -u], [v, -v], [u, -v], [u, v], [v, v], [v, u], [-v, u], [-v, v], [-u, v],
                        [-u, -v], [-v, -v]])
        c, s = np.cos(a0), np.sin(a0)
        return (pts @ np.array([[c, s], [-s, c]]) + [cx, cy]).astype(np.int32)
    return np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Noisy colour gradient with random lines and blobs (clutter that is not an object)."""
    y, x = np.mgrid[0:size, 0:size] / size
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = (x * rng.uniform(-1, 1) + y * rng.uniform(-1, 1))[..., None]
    img = c0 + (c1 - c0) * (t - t.min()) / (np.ptp(t) + 1e-6) + rng.normal(0, 12, (size, size, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(3, 9))):
        p1, p2 = rng.integers(0, size, 2), rng.integers(0, size, 2)
        cv2.line(img, tuple(map(int, p1)), tuple(map(int, p2)), rng.integers(0, 255, 3).tolist(), int(rng.integers(1, 4)))
    for _ in range(int(rng.integers(0, 4))):
        axes = tuple(int(a) for a in rng.integers(size // 40 + 1, size // 12 + 2, 2))
        cv2.ellipse(img, tuple(map(int, rng.integers(0, size, 2))), axes, float(rng.uniform(0, 180)), 0, 360,
                    rng.integers(0, 255, 3).tolist(), -1)
    return img


def _draw_image(size: int, rng: np.random.Generator, max_objects: int) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    img = _background(size, rng)
    owner = np.full((size, size), -1, np.int32)  # which object is visible at each pixel
    objs = []
    for k in range(int(rng.integers(1, max_objects + 1))):
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        r = float(rng.uniform(0.04, 0.22) * size)  # scale variation: ~4x
        cx, cy = rng.uniform(r * 0.5, size - r * 0.5, 2)
        colour = rng.integers(0, 255, 3).tolist()
        layer = np.zeros((size, size), np.uint8)
        if SHAPE_CLASSES[cls] == "circle":
            ax = (int(r), int(r * rng.uniform(0.6, 1.0)))
            cv2.ellipse(layer, (int(cx), int(cy)), ax, float(rng.uniform(0, 180)), 0, 360, 255, -1)
        else:
            cv2.fillPoly(layer, [_polygon(SHAPE_CLASSES[cls], cx, cy, r, rng)], 255)
        m = layer > 0
        if m.sum() < 16:
            continue
        img[m] = colour
        owner[m] = k
        objs.append((k, cls, int(m.sum())))
    labels = []
    for k, cls, area in objs:
        ys, xs = np.nonzero(owner == k)
        if len(xs) < area / 3:  # mostly occluded: not labelled
            continue
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        labels.append((cls, (x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size))
    return img, labels


def make_shapes_dataset(
    root: str | Path,
    n_train: int = 256,
    n_val: int = 64,
    imgsz: int = 320,
    seed: int = 0,
    max_objects: int = 6,
) -> Path:
    """Write the synthetic shapes dataset in YOLO layout and return its data YAML.

    Layout: ``root/images/{train,val}/*.jpg``, ``root/labels/{train,val}/*.txt`` (``cls cx cy w h``, normalised),
    ``root/shapes.yaml``. An existing dataset with the same parameters is reused, not rewritten.

    Args:
        root: Output directory.
        n_train: Number of training images.
        n_val: Number of validation images.
        imgsz: Side of the square images in pixels.
        seed: Seed of the generator; the same seed gives identical files.
        max_objects: Most objects per image.

    Returns:
        Path to the data YAML, usable as ``data=`` in ultralytics train/val.

    Examples:
        >>> yaml_path = make_shapes_dataset("/tmp/shapes", n_train=8, n_val=4, imgsz=128)
        >>> yaml_path.name
        'shapes.yaml'
    """
    for name, v in {"n_train": n_train, "n_val": n_val, "imgsz": imgsz, "max_objects": max_objects}.items():
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}={v!r} must be a positive int")
    root = Path(root)
    spec = {"n_train": n_train, "n_val": n_val, "imgsz": imgsz, "seed": seed, "max_objects": max_objects}
    data_yaml = root / "shapes.yaml"
    if data_yaml.exists() and yaml.safe_load(data_yaml.read_text()).get("generator") == spec:
        return data_yaml
    for split, count in (("train", n_train), ("val", n_val)):
        rng = np.random.default_rng([seed, 0 if split == "train" else 1])
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            img, labels = _draw_image(imgsz, rng, max_objects)
            cv2.imwrite(str(root / "images" / split / f"{i:06d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
            lines = "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in labels)
            (root / "labels" / split / f"{i:06d}.txt").write_text(lines)
    meta = {"path": str(root.resolve()), "train": "images/train", "val": "images/val",
            "names": dict(enumerate(SHAPE_CLASSES)), "generator": spec}
    data_yaml.write_text(yaml.safe_dump(meta, sort_keys=False))
    return data_yaml
