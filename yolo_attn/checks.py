"""Checks of what users pass in, before ultralytics sees it: checkpoints, image sizes, labels, export requests.

Each failure is a :class:`WorkflowError` whose one-line message names the value and what is allowed; the
``yolo-attn`` command prints it without a traceback (:mod:`yolo_attn.cli`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from . import integration
from .integration import YOLO
from .transfer import TransferError, check_checkpoint_path

__all__ = [
    "IMAGE_SUFFIXES", "WorkflowError", "check_export_request", "check_exported", "check_imgsz", "check_labels",
    "load_model",
]

_WEIGHT_SUFFIXES = {".pt", ".pth"}
IMAGE_SUFFIXES = {".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm", ".heic"}


class WorkflowError(ValueError):
    """A user-facing problem with the arguments (missing file, would-download, unknown device); one-line message."""


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


def _format_arguments() -> dict[str, list[str]]:
    """ultralytics' export table: format argument -> the export arguments it accepts."""
    from ultralytics.engine.exporter import export_formats

    table = export_formats()
    return {fmt: list(args) for fmt, args in zip(table["Argument"], table["Arguments"]) if fmt not in ("-", "")}


#: Format aliases ultralytics accepts (``tflite`` and ``tfjs`` now export ``litert``).
_FORMAT_ALIASES = {"tensorrt": "engine", "trt": "engine", "tflite": "litert", "tfjs": "litert", "mlpackage": "coreml",
                   "mlprogram": "coreml", "apple": "coreml", "ios": "coreml"}


def check_export_request(overrides: dict[str, Any]) -> None:
    """Refuse an export request a format cannot honour, with one line, before anything is written.

    ultralytics asserts on some of these deep inside its exporter (a traceback); others it silently drops.
    ``dynamic=True`` is honoured by every format whose ultralytics export accepts it (the attention index plans are
    computed in the graph from the input size); formats without it (ncnn, ...) export one input size.

    Args:
        overrides: The export keyword arguments (``format``, ``dynamic``, ...).

    Raises:
        WorkflowError: ``format=ncnn does not support dynamic=True (...)`` naming the formats that do; fp16
            TorchScript without CUDA.
    """
    fmt = str(overrides.get("format", "torchscript")).lower()
    fmt = _FORMAT_ALIASES.get(fmt, fmt)
    table = _format_arguments()
    half = bool(overrides.get("half")) or str(overrides.get("quantize")).lower() in {"16", "fp16", "half"}
    on_cuda = str(overrides.get("device", "cpu")).lower() not in {"cpu", "none", ""} and torch.cuda.is_available()
    if half and fmt == "torchscript" and not on_cuda:
        raise WorkflowError("half=True for format=torchscript needs a CUDA device (ultralytics traces fp16 TorchScript "
                            "on the GPU): pass device=0 on a CUDA machine, or export format=onnx or openvino half=True")
    if overrides.get("dynamic") and fmt in table and "dynamic" not in table[fmt]:
        allowed = ", ".join(f for f, args in table.items() if "dynamic" in args)
        raise WorkflowError(f"format={fmt} does not support dynamic=True (its files have one input size); "
                            f"export with dynamic=False at each size you need, or use a dynamic format: {allowed}")


def _ncnn_unsupported_layers(folder: Path) -> list[str]:
    import ncnn

    lines = (folder / "model.ncnn.param").read_text().splitlines()[2:]
    return sorted({line.split()[0] for line in lines if line.split() and ncnn.layer_to_index(line.split()[0]) < 0})


def check_exported(path: str | Path) -> None:
    """Refuse an exported artefact its runtime cannot load (and remove it), so no broken file is handed over.

    Today this concerns ncnn: pnnx leaves operators ncnn does not implement (gathers by a computed index, which the
    sparse attention plans use, masked fills, argmax routing, ...) as ``Tensor.index`` / ``Tensor.masked_fill`` /
    ``torch.gather`` ... layers, and ncnn then cannot load the graph at all.

    Args:
        path: What ultralytics' exporter returned.

    Raises:
        WorkflowError: Naming the layers ncnn lacks; the exported folder has been removed.
    """
    folder = Path(path)
    if not (folder.is_dir() and (folder / "model.ncnn.param").is_file()):
        return
    missing = _ncnn_unsupported_layers(folder)
    if missing:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        raise WorkflowError(f"format=ncnn: ncnn has no layer for {', '.join(missing)} (operators of this model's "
                            "attention that pnnx could not lower), so the file could not run; nothing was kept. Export "
                            "to onnx, openvino or torchscript instead, or use a config without sparse attention")
