"""Pretrained transfer: what a checkpoint gives a model, by layer, and the checks before it is loaded.

ultralytics moves weights by name and shape (``DetectionModel.load`` -> ``intersect_dicts``); yolo_attn's configs keep
the layer indices of ultralytics' config of their family (``yolov5.yaml``, ``yolov8.yaml``, ``yolo11.yaml``) and our
blocks keep the submodule names of the ``C3`` / ``C2f`` / ``C3k2`` they augment, so every tensor of the family's
stock checkpoint (``yolov5nu.pt``, ``yolov8n.pt``, ``yolo11n.pt``, ...) finds its place. This module only *describes* and *checks* a transfer
(plain torch, no ultralytics internals); :mod:`yolo_attn.integration` does the loading and prints the report:

- :func:`check_checkpoint_path`: the file exists, is local and is a torch archive (one-line :class:`TransferError`);
- :func:`check_fits`: the checkpoint belongs to the model's family and scale (enough tensors match by name and shape),
  otherwise a one-line error naming both and the layer types that differ (a YOLO11 checkpoint into a YOLOv5 config);
- :func:`build_report`: after loading, per layer: tensors transferred, new (left at their initialisation) and dropped
  (in the checkpoint, unused), and whether each attention block starts as an exact no-op (all gains 0).

Examples:
    >>> from yolo_attn import YOLO
    >>> model = YOLO("yolov5n-local.yaml").load("yolov5nu.pt")  # doctest: +SKIP
    >>> model.transfer_report.fraction  # doctest: +SKIP
    1.0
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .configs import stock_weights

__all__ = ["MIN_MATCH", "LayerTransfer", "TransferError", "TransferReport", "build_report", "check_checkpoint_path",
           "check_fits", "describe", "stock_type"]

#: Below this fraction of the checkpoint's tensors matching by name and shape, loading is refused as a mismatch.
MIN_MATCH = 0.5


class TransferError(ValueError):
    """A checkpoint that cannot serve as pretrained weights for this model; the message is one line."""


def _shown(path: str | Path) -> str:
    """The file name only (reports and messages never show absolute or home paths)."""
    return Path(str(path)).name


def check_checkpoint_path(path: str | Path, key: str = "pretrained") -> Path:
    """Check that a weights path is a local torch archive, without downloading or unpickling anything.

    Args:
        path: The value given (``pretrained=yolov5su.pt``, ``YOLO(...).load(path)``).
        key: The argument name used in the message.

    Returns:
        The path.

    Raises:
        TransferError: A URL, a missing file, a directory, or a file that ``torch.save`` did not write (empty,
            truncated, text), each naming the value and what is allowed.

    Examples:
        >>> check_checkpoint_path("missing.pt")
        Traceback (most recent call last):
        ...
        yolo_attn.transfer.TransferError: pretrained=missing.pt: no such file; yolo-attn never downloads weights (...)
    """
    s = str(path)
    if "://" in s:
        raise TransferError(f"{key}={s} is a URL; yolo-attn never downloads weights: pass a local .pt file")
    p = Path(s).expanduser()
    if not p.exists():
        raise TransferError(f"{key}={s}: no such file; yolo-attn never downloads weights (put the checkpoint, e.g. "
                            "yolov5nu.pt, on disk and pass its path)")
    if p.is_dir():
        raise TransferError(f"{key}={s} is a directory; pass a checkpoint file (.pt), e.g. weights/best.pt")
    if not zipfile.is_zipfile(p):  # torch.save writes a zip archive; truncation loses its central directory
        raise TransferError(f"{key}={s} is not a readable checkpoint ({p.stat().st_size} bytes: empty, truncated or "
                            "not written by torch.save); use weights/best.pt or last.pt of a finished run, or e.g. yolov5nu.pt")
    return p


def stock_type(module: nn.Module) -> str:
    """The ultralytics class a layer is or augments: ``C3`` for :class:`~yolo_attn.blocks.C3Attn`, ``Conv`` for Conv.

    Args:
        module: A layer of a detection model.

    Returns:
        The name of the first class in the module's MRO that ultralytics or torch defines, else its own class name.

    Examples:
        >>> from yolo_attn.blocks import C3Attn
        >>> stock_type(C3Attn(16, 16, 1))
        'C3'
    """
    for cls in type(module).__mro__:
        if cls.__module__.startswith(("ultralytics.", "torch.")):
            return cls.__name__
    return type(module).__name__


def _layers(model: nn.Module) -> list[nn.Module]:
    layers = getattr(model, "model", None)
    return list(layers) if isinstance(layers, nn.Sequential) else []


def _layer_of(key: str) -> int | None:
    m = re.match(r"model\.(\d+)\.", key)
    return int(m.group(1)) if m else None


def _matching(src_sd: dict, dst_sd: dict) -> set[str]:
    return {k for k, v in src_sd.items() if k in dst_sd and tuple(v.shape) == tuple(dst_sd[k].shape)}


def _model_name(model: nn.Module) -> str:
    yaml = getattr(model, "yaml", None) or {}
    name = yaml.get("yaml_file") if isinstance(yaml, dict) else None
    return _shown(name) if name else type(model).__name__


def check_fits(model: nn.Module, source: nn.Module, label: str) -> None:
    """Refuse a checkpoint of another family or scale before anything is loaded.

    A checkpoint fits when at least :data:`MIN_MATCH` of its tensors match the model's by name and shape (the same
    rule ultralytics' transfer applies). When it does not, the message names the checkpoint's and the model's build
    configs and the layer types that differ (e.g. ``C3k2, C2PSA`` of YOLO11 vs ``C3`` of YOLOv5), or, with the same
    layer types, the scales.

    Args:
        model: The model about to receive the weights.
        source: The checkpoint's model.
        label: How the user named the checkpoint (``pretrained=yolo11n.pt``).

    Raises:
        TransferError: One line naming both models, the match and what is expected.
    """
    src_sd, dst_sd = source.state_dict(), model.state_dict()
    matched = len(_matching(src_sd, dst_sd))
    if src_sd and matched >= MIN_MATCH * len(src_sd):
        return
    src_types = [stock_type(m) for m in _layers(source)]
    dst_types = [stock_type(m) for m in _layers(model)]
    only_src = sorted(set(src_types) - set(dst_types))
    only_dst = sorted(set(dst_types) - set(src_types))
    ours, theirs = _model_name(model), _model_name(source)
    if only_src or only_dst or len(src_types) != len(dst_types):
        why = (f"another model family: its layers use {', '.join(only_src) or 'the same types'}"
               f"{f' where {ours} uses ' + ', '.join(only_dst) if only_dst else ''}"
               f" ({len(src_types)} vs {len(dst_types)} layers)")
    else:
        scales = [(getattr(m, "yaml", None) or {}).get("scale") for m in (source, model)]
        why = (f"the same layer types at other widths (scale {scales[0]} vs {scales[1]})" if scales[0] != scales[1]
               else "the same layer types at other widths")
    raise TransferError(f"{label} ({theirs}) does not fit {ours}: only {matched}/{len(src_sd)} of its tensors match "
                        f"by name and shape, {why}; use a checkpoint of the same family and scale ({_stock_hint(model)})")


def _stock_hint(model: nn.Module) -> str:
    """Which checkpoints fit ``model``: its family's stock checkpoint at its scale (from its config name)."""
    scale = (getattr(model, "yaml", None) or {}).get("scale") or "n"
    name = _model_name(model)
    try:
        return f"for {name}: ultralytics' {stock_weights(name, scale)} or your own run's best.pt"
    except ValueError:  # not a config name of a known family
        return "e.g. your own run's best.pt"


@dataclass
class LayerTransfer:
    """What one layer received: counts of tensors (parameters and buffers, as in a state dict)."""

    index: int
    module: str  #: the model's layer class
    source: str | None  #: the checkpoint's layer class at that index (None: no such layer)
    transferred: int
    new: int  #: in the model, not in the checkpoint (left at their initialisation)
    dropped: int  #: in the checkpoint, not used
    identity: bool | None = None  #: attention blocks: whether every gain is 0 (computes exactly the stock layer)

    def note(self) -> str:
        """A short explanation of the row."""
        if self.identity is not None and self.new:
            return ("attention added, gains 0: computes exactly the stock " + (self.source or "layer")
                    if self.identity else "attention added, gains kept (layer_scale): starts from its initialisation")
        if self.module == "Detect" and (self.new or self.dropped):
            return "class outputs re-initialised (another nc)"
        if self.source is not None and self.module != self.source and not self.transferred:
            return f"replaces {self.source}"
        return ""


@dataclass
class TransferReport:
    """The result of loading a checkpoint into a model, by layer (see :func:`build_report`)."""

    source: str  #: checkpoint name (file name, never a full path)
    target: str  #: model config name
    n_source: int  #: tensors in the checkpoint's state dict
    n_target: int  #: tensors in the model's state dict
    layers: list[LayerTransfer] = field(default_factory=list)

    @property
    def transferred(self) -> int:
        """Tensors moved from the checkpoint into the model."""
        return sum(r.transferred for r in self.layers)

    @property
    def new(self) -> int:
        """Model tensors the checkpoint did not provide."""
        return sum(r.new for r in self.layers)

    @property
    def dropped(self) -> int:
        """Checkpoint tensors the model did not take."""
        return sum(r.dropped for r in self.layers)

    @property
    def fraction(self) -> float:
        """Fraction of the checkpoint's tensors transferred."""
        return self.transferred / max(self.n_source, 1)

    @property
    def identity(self) -> bool:
        """Whether every attention block starts as an exact no-op on the stock computation."""
        return all(r.identity is not False for r in self.layers)

    def format(self) -> str:
        """The report as printed: a summary line, then one row per layer that did not take the checkpoint as is.

        Examples:
            >>> r = TransferReport("a.pt", "b.yaml", 2, 3, [LayerTransfer(0, "C3Attn", "C3", 2, 1, 0, True)])
            >>> print(r.format().splitlines()[0])
            Transfer from a.pt into b.yaml: 2/2 checkpoint tensors (100.0%) transferred, 1 new, 0 dropped
        """
        lines = [(f"Transfer from {self.source} into {self.target}: {self.transferred}/{self.n_source} checkpoint "
                  f"tensors ({100 * self.fraction:.1f}%) transferred, {self.new} new, {self.dropped} dropped")]
        shown = [r for r in self.layers if r.new or r.dropped or r.module != r.source]
        if shown:
            lines.append(f"{'layer':>5}  {'module':<10} {'checkpoint':<10} {'transferred':>11} {'new':>5} "
                         f"{'dropped':>7}  note")
            lines += [f"{r.index:>5}  {r.module:<10} {r.source or '-':<10} {r.transferred:>11} {r.new:>5} "
                      f"{r.dropped:>7}  {r.note()}".rstrip() for r in shown]
        rest = len(self.layers) - len(shown)
        if rest:
            lines.append(f"{rest} other layers: every tensor transferred")
        return "\n".join(lines)


def build_report(model: nn.Module, source: nn.Module, source_name: str, target_name: str | None = None
                 ) -> TransferReport:
    """Describe a finished transfer: per layer of ``model``, tensors transferred, new and dropped.

    A tensor counts as transferred when the checkpoint has it under the same name and shape (what ultralytics'
    ``intersect_dicts`` loads); call this after loading, when the model's head has its final shapes.

    Args:
        model: The model that received the weights.
        source: The checkpoint's model.
        source_name: Checkpoint name for the report (shown as its file name).
        target_name: Model name for the report; defaults to its config file name.

    Returns:
        The :class:`TransferReport`.
    """
    src_sd, dst_sd = source.state_dict(), model.state_dict()
    moved = _matching(src_sd, dst_sd)
    src_layers, dst_layers = _layers(source), _layers(model)
    rows = []
    for i, layer in enumerate(dst_layers):
        mine = [k for k in dst_sd if _layer_of(k) == i]
        theirs = [k for k in src_sd if _layer_of(k) == i]
        t = sum(k in moved for k in mine)
        rows.append(LayerTransfer(
            index=i, module=type(layer).__name__,
            source=type(src_layers[i]).__name__ if i < len(src_layers) else None,
            transferred=t, new=len(mine) - t, dropped=len(theirs) - t,
            identity=getattr(layer, "starts_as_identity", None)))
    extra = [k for k in src_sd if _layer_of(k) is None or _layer_of(k) >= len(dst_layers)]
    if extra:  # checkpoint layers past the model's last one
        rows.append(LayerTransfer(len(dst_layers), "-", "(more)", 0, 0, len(extra)))
    return TransferReport(_shown(source_name), target_name or _model_name(model), len(src_sd), len(dst_sd), rows)


def describe(value: Any) -> str:
    """A short name for a weights argument (file name of a path, class name of an object)."""
    return _shown(value) if isinstance(value, (str, Path)) else type(value).__name__
