"""Export requests a format cannot honour and exported artefacts their runtime cannot load, refused in one line.

:class:`yolo_attn.YOLO.export <yolo_attn.integration.YOLO>` calls :func:`check_export_request` before ultralytics'
exporter writes anything and :func:`check_exported` on what it returned.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import WorkflowError

__all__ = ["check_export_request", "check_exported"]


#: Format aliases ultralytics accepts (``tflite`` and ``tfjs`` now export ``litert``).
_FORMAT_ALIASES = {"tensorrt": "engine", "trt": "engine", "tflite": "litert", "tfjs": "litert", "mlpackage": "coreml",
                   "mlprogram": "coreml", "apple": "coreml", "ios": "coreml"}


def check_export_request(overrides: dict[str, Any], formats: Mapping[str, list[str]]) -> None:
    """Refuse an export request a format cannot honour, with one line, before anything is written.

    ultralytics asserts on some of these deep inside its exporter (a traceback); others it silently drops.
    ``dynamic=True`` is honoured by every format whose ultralytics export accepts it (the attention index plans are
    computed in the graph from the input size); formats without it (ncnn, ...) export one input size.

    Args:
        overrides: The export keyword arguments (``format``, ``dynamic``, ...).
        formats: ultralytics' export table, format argument -> the export arguments it accepts
            (:func:`yolo_attn.integration.export_format_arguments`).

    Raises:
        WorkflowError: ``format=ncnn does not support dynamic=True (...)`` naming the formats that do; fp16
            TorchScript without CUDA.
    """
    fmt = str(overrides.get("format", "torchscript")).lower()
    fmt = _FORMAT_ALIASES.get(fmt, fmt)
    table = formats
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
        shutil.rmtree(folder, ignore_errors=True)
        raise WorkflowError(f"format=ncnn: ncnn has no layer for {', '.join(missing)} (operators of this model's "
                            "attention that pnnx could not lower), so the file could not run; nothing was kept. Export "
                            "to onnx, openvino or torchscript instead, or use a config without sparse attention")
