"""A deterministic synthetic detection dataset: coloured shapes on cluttered backgrounds, YOLO txt labels.

Each image holds several objects of a few shape classes at varied scales and aspect ratios, drawn over a noisy
gradient background with line/blob clutter; later objects may partly occlude earlier ones (a box whose visible area
drops below a third is removed from the labels). Everything is drawn with OpenCV from a seeded NumPy generator, so
the same arguments always give byte-identical files.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

__all__ = [
    "DEFAULT_SPEC",
    "SHAPE_CLASSES",
    "data_dir",
    "ensure_generated",
    "make_shapes_dataset",
    "render_image",
    "shapes_dataset",
]

SHAPE_CLASSES = ("circle", "square", "triangle", "star", "cross")
DEFAULT_SPEC = {"n_train": 256, "n_val": 64, "imgsz": 320, "seed": 0, "max_objects": 6}


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
    if data_yaml.exists():
        old = yaml.safe_load(data_yaml.read_text()) or {}
        if old.get("generator") == spec:
            return data_yaml
        if "generator" in old:  # ours, other parameters: start clean (stale images, ultralytics' label caches)
            data_yaml.unlink()
            for sub in ("images", "labels"):
                shutil.rmtree(root / sub, ignore_errors=True)
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


def render_image(imgsz: int, seed: int = 0, max_objects: int = 6) -> np.ndarray:
    """Draw one image of the shapes distribution (for quick checks such as export parity).

    Args:
        imgsz: Side of the square image in pixels.
        seed: Seed of the generator.
        max_objects: Most objects in the image.

    Returns:
        A ``uint8`` BGR image ``[imgsz, imgsz, 3]`` (OpenCV layout).

    Examples:
        >>> render_image(64).shape
        (64, 64, 3)
    """
    return _draw_image(imgsz, np.random.default_rng([seed, 2]), max_objects)[0]


def data_dir() -> Path:
    """The directory yolo_attn generates datasets into (never inside the installed package).

    ``$YOLO_ATTN_DATA_DIR`` when set; otherwise the platform's per-user data directory: ``$XDG_DATA_HOME/yolo_attn``
    or ``~/.local/share/yolo_attn`` on Linux, ``~/Library/Application Support/yolo_attn`` on macOS,
    ``%LOCALAPPDATA%\\yolo_attn`` on Windows.

    Returns:
        The directory (not created here).
    """
    if os.environ.get("YOLO_ATTN_DATA_DIR"):
        return Path(os.environ["YOLO_ATTN_DATA_DIR"]).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "yolo_attn"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "yolo_attn"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "yolo_attn"


def shapes_dataset(name: str = "shapes", **spec: Any) -> Path:
    """Generate (first use) or reuse the shapes dataset ``name`` under :func:`data_dir` and return its data YAML.

    Args:
        name: Sub-directory of :func:`data_dir` (a plain name, or an absolute path to use as the root).
        **spec: :func:`make_shapes_dataset` parameters overriding :data:`DEFAULT_SPEC`.

    Returns:
        Path to the generated data YAML (it holds an absolute ``path:``).

    Examples:
        >>> shapes_dataset(n_train=8, n_val=4, imgsz=64).name  # doctest: +SKIP
        'shapes.yaml'
    """
    unknown = sorted(set(spec) - set(DEFAULT_SPEC))
    if unknown:
        raise ValueError(f"unknown shapes generator parameter(s) {unknown}; known: {sorted(DEFAULT_SPEC)}")
    root = Path(str(name)).expanduser()
    if not root.is_absolute():
        if len(root.parts) != 1 or root.name in {"", ".", ".."}:
            raise ValueError(f"{name=} must be a plain directory name or an absolute path")
        root = data_dir() / root
    return make_shapes_dataset(root, **{**DEFAULT_SPEC, **spec})


def ensure_generated(data: dict) -> dict:
    """Generate the dataset a data YAML's ``generator:`` block describes, and point the dict's paths at it.

    A data YAML may carry ``generator: {name: shapes, n_train: ..., ...}`` (see ``data/shapes.yaml``). This function
    generates that dataset under :func:`data_dir` (reusing it when present) and sets ``path``, ``train`` and ``val``
    of ``data`` to absolute locations, in place. ultralytics calls it through the YAML's ``download:`` script, so plain
    ``ultralytics.YOLO(...).train(data="data/shapes.yaml")`` works too; the ``yolo-attn`` command calls it directly.

    Args:
        data: A parsed data YAML with a ``generator`` mapping.

    Returns:
        The same dict, updated.
    """
    gen = data.get("generator")
    if not isinstance(gen, dict):
        raise ValueError(f"data YAML 'generator:' must be a mapping of shapes parameters, got {gen!r}")
    gen = dict(gen)
    yaml_path = shapes_dataset(gen.pop("name", "shapes"), **gen)
    root = yaml_path.parent.resolve()
    data.update(path=root, train=str(root / "images" / "train"), val=str(root / "images" / "val"))
    return data
