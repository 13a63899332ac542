"""Checks of what users pass in, before ultralytics sees it: checkpoints, image sizes, labels (export requests:
:mod:`yolo_attn.export_checks`).

Each failure is a :class:`WorkflowError` whose one-line message names the value and what is allowed; the
``yolo-attn`` command prints it without a traceback (:mod:`yolo_attn.cli`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from . import integration
from .errors import WorkflowError
from .integration import YOLO
from .transfer import TransferError, check_checkpoint_path

__all__ = [
    "IMAGE_SUFFIXES", "WorkflowError", "check_imgsz", "check_labels", "load_model",
]

_WEIGHT_SUFFIXES = {".pt", ".pth"}
IMAGE_SUFFIXES = {".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm", ".heic"}


def load_model(model: str) -> YOLO:
    """:class:`yolo_attn.YOLO` of a resolved ``model=`` value; an unreadable or foreign checkpoint is a WorkflowError.

    Args:
        model: A value returned by :func:`resolve_model`.

    Returns:
        The loaded model.

    Raises:
        WorkflowError: ``model=... is not a readable checkpoint (...)`` for an empty, truncated or non-torch file;
            ``model=... is not an ultralytics/yolo_attn checkpoint (...)`` for a readable file of something else
            (a plain ``state_dict``, a torchvision model, ...).
    """
    if Path(model).suffix.lower() not in _WEIGHT_SUFFIXES:
        return YOLO(model)
    try:
        check_checkpoint_path(model, "model")
    except TransferError as e:
        raise WorkflowError(str(e)) from None
    expected = "expected weights/best.pt or last.pt of a yolo-attn/ultralytics training run, or YOLO.save()"
    try:
        yolo = YOLO(model)
    except (TypeError, AttributeError, KeyError, IndexError, RuntimeError, EOFError, OSError, ImportError,
            ModuleNotFoundError) as e:
        first = (str(e).strip().splitlines() or [""])[0].replace("ERROR ❌️ ", "").strip()
        raise WorkflowError(f"model={model} is not an ultralytics/yolo_attn checkpoint ({type(e).__name__}: "
                            f"{first}); {expected}") from None
    if not isinstance(getattr(yolo, "model", None), torch.nn.Module) or not hasattr(yolo.model, "stride"):
        raise WorkflowError(f"model={model} is not an ultralytics/yolo_attn checkpoint (holds "
                            f"{type(getattr(yolo, 'model', None)).__name__}); {expected}")
    return yolo


def check_imgsz(imgsz: Any, yolo: YOLO) -> None:
    """Reject an ``imgsz`` that is not a positive multiple of the model's largest stride (ultralytics would round it).

    Attention windows are laid out on the feature maps, so the size the user asked for is the size that must run.

    Args:
        imgsz: The ``imgsz=`` value (int, or ``[h, w]``); None: nothing to check.
        yolo: The loaded model (exported models have no stride to check against and are skipped).

    Raises:
        WorkflowError: Naming the value, the stride and the two nearest allowed sizes.
    """
    model = getattr(yolo, "model", None)
    if imgsz is None or not isinstance(model, torch.nn.Module) or getattr(model, "stride", None) is None:
        return
    stride = int(torch.as_tensor(model.stride).max())
    sizes = list(imgsz) if isinstance(imgsz, (list, tuple)) else [imgsz]
    for v in sizes:
        if isinstance(v, bool) or not isinstance(v, int) or v < stride or v % stride:
            lo = max(stride, (int(v) // stride) * stride) if isinstance(v, (int, float)) else stride
            hi = lo + stride if isinstance(v, (int, float)) and lo < v else lo
            hint = f"imgsz={lo}" + (f" or imgsz={hi}" if hi != lo else "")
            raise WorkflowError(f"imgsz={imgsz} is not a positive multiple of the model stride {stride}; use e.g. {hint}")


def _label_path(image: Path) -> Path:
    """ultralytics' rule: the last ``/images/`` of the image path becomes ``/labels/``, the suffix ``.txt``."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return Path(sb.join(str(image).rsplit(sa, 1))).with_suffix(".txt")


def _split_images(source: Any) -> list[Path]:
    """Image files of one split (a folder, a .txt list of images, a single image, or a list of those)."""
    out: list[Path] = []
    for item in source if isinstance(source, (list, tuple)) else [source]:
        p = Path(str(item))
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.suffix.lower() == ".txt" and p.is_file():
            lines = [x.strip() for x in p.read_text().splitlines() if x.strip()]
            out += [(p.parent / x if x.startswith("./") or not Path(x).is_absolute() else Path(x)) for x in lines]
        elif p.is_file():
            out.append(p)
    return out


def _bad_label_line(line: str, nc: int) -> str | None:
    """What is wrong with one detection label line (``class x_center y_center width height``), or None."""
    fields = line.split()
    if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
        return (f"{len(fields)} fields; allowed: 5 (class x_center y_center width height, normalised to [0, 1]) "
                "or a polygon (class x1 y1 x2 y2 x3 y3 ...)")
    try:
        values = [float(v) for v in fields]
    except ValueError:
        bad = next(v for v in fields if not _is_float(v))
        return f"value {bad!r} is not a number"
    c = values[0]
    if c != int(c) or not 0 <= c < nc:
        return f"class {fields[0]} is out of range; allowed: an int in 0..{nc - 1} (nc={nc} in the data YAML)"
    for v, text in zip(values[1:], fields[1:]):
        if not 0.0 <= v <= 1.0:
            return f"coordinate {text} is out of range; allowed: normalised values in [0, 1]"
    return None


def _is_float(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def check_labels(data: str | Path, splits: tuple[str, ...] = ("train", "val")) -> None:
    """Fast text scan of a detection dataset's labels before ultralytics (which silently drops bad images) sees them.

    Args:
        data: A local data YAML (see :func:`resolve_data`).
        splits: Which splits must have images and valid labels.

    Raises:
        WorkflowError: A split without images, or the first bad label line (file, line, value, allowed range) and
            how many bad lines there are in all.
    """
    d = integration.check_dataset_local(data)
    nc = int(d.get("nc") or len(d.get("names") or {}))
    for split in splits:
        if d.get(split) in (None, ""):
            continue
        images = _split_images(d[split])
        if not images:
            raise WorkflowError(f"data={data}: no images in {split}={d[split]} (allowed image types: "
                                f"{', '.join(sorted(s[1:] for s in IMAGE_SUFFIXES))})")
        first, count = None, 0
        for image in images:
            label = _label_path(image)
            if not label.is_file():
                continue  # an image without objects (background), as in ultralytics
            for n, line in enumerate(label.read_text(errors="replace").splitlines(), 1):
                why = _bad_label_line(line, nc) if line.strip() else None
                if why:
                    count += 1
                    first = first or f"{label} line {n}: {why}"
        if first:
            more = f" ({count} bad lines in the {split} labels)" if count > 1 else ""
            raise WorkflowError(f"data={data}: {first}{more}")
