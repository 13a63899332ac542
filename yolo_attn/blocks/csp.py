"""Attention blocks of the YOLOv8 / YOLO11 families: ultralytics' ``C2f`` and ``C3k2`` plus attention.

``AttnC2f`` and ``AttnC3k2`` subclass the stock module (same ``cv1, cv2, m.{i}`` submodules and shapes, ``n`` = its
bottlenecks) and add a :class:`~yolo_attn.blocks.TransformerStack` on the output of the last bottleneck, before the
concatenation: ``cv2(cat(y0, y1, m1, ..., attn(m_n)))``. The machinery is ``C3Attn``'s (:class:`_AttentionPath`):
LayerScale-gated branches, zeroed when a stock checkpoint is loaded (``layer_scale: auto``), so a stock ``yolov8n.pt``
/ ``yolo11n.pt`` transfers every tensor and the model starts as exactly the stock model.

The names put ``Attn`` first because ultralytics already has a ``C2fAttn`` (YOLO-World's text-guided block).

YAML: the stock row's own arguments first, then the attention kind and options::

    - [-1, 3, AttnC2f, [256, False, local, {window: 7}]]    # the slot of yolov8.yaml's [-1, 3, C2f, [256]]
    - [-1, 2, AttnC3k2, [256, False, local, {window: 7}]]   # the slot of yolo11.yaml's [-1, 2, C3k2, [256, False]]

The second argument is the stock module's (``C2f``: ``shortcut``; ``C3k2``: ``c3k``, which ultralytics turns on at
scales m/l/x as for its own ``C3k2``; the seam reads the value back from the stock module it built). It may be left
out when the kind follows (``[256, local, {window: 7}]``: the stock default).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from ultralytics.nn.modules import C2f, C3k2

from ..integration import register_block
from . import PATH_OPTIONS, _AttentionPath, _block_options, _check_n, _hidden_channels

__all__ = ["AttnC2f", "AttnC3k2"]


def _no_positional_option(options: Mapping | None, key: str, block: str, stock: str) -> None:
    if isinstance(options, Mapping) and key in options:
        raise ValueError(f"{key} is {block}'s argument after c2, as for {stock}: [c2, {key}, kind, {{options}}]; "
                         "remove it from the options")


class _C2fPath(_AttentionPath):
    """Mixin: ``C2f``'s forward with the attention on the last bottleneck's output (also as ``forward_split``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[B, c1, H, W]`` to ``[B, c2, H, W]``."""
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.extend(m(y[-1]) for m in self.m)
        y[-1] = self._attend(y[-1])
        return self.cv2(torch.cat(y, 1))

    # ultralytics' exporter swaps every C2f's forward for ``forward_split``: it must keep the attention
    forward_split = forward


@register_block
class AttnC2f(_C2fPath, C2f):
    """ultralytics' ``C2f`` (YOLOv8) plus ``depth`` transformer layers on the output of its last bottleneck.

    Same submodule names and shapes as ``C2f``, so a stock YOLOv8 checkpoint's tensors transfer; loaded from one, the
    gains start at 0 and the block computes exactly that ``C2f``.

    YAML: ``[-1, n, AttnC2f, [c2, shortcut, kind, {options}]]`` (``shortcut`` as ``C2f``'s: ``True`` in the backbone of
    ``yolov8.yaml``, ``False`` (the default) in its neck).

    Args:
        c1: Input channels.
        c2: Output channels.
        n: Number of bottlenecks (as for ``C2f``; depth-scaled).
        shortcut: Residual connection in the bottlenecks, as ``C2f``'s.
        kind: Attention kind (see :func:`~yolo_attn.blocks.attention_kinds`).
        options: ``depth`` (1), ``split`` (1), ``layer_scale`` (``auto``), ``heads`` / ``head_dim`` (32),
            ``mlp_ratio`` (2), ``pos``, ``e`` (0.5; another value changes the widths, so stock tensors no longer fit)
            and the options of ``kind``.

    Examples:
        >>> AttnC2f(32, 64, 1, False, "local", {"window": 3})(torch.randn(1, 32, 10, 12)).shape
        torch.Size([1, 64, 10, 12])
    """

    stock_args = ("shortcut",)

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, kind: str = "full",
                 options: Mapping | None = None) -> None:
        _check_n(n, "number of bottlenecks, as for C2f")
        if not isinstance(shortcut, bool):
            raise ValueError(f"shortcut={shortcut!r} must be true or false (C2f's second argument)")
        _no_positional_option(options, "shortcut", "AttnC2f", "C2f")
        o, rest = _block_options(options, "AttnC2f", **PATH_OPTIONS)
        _hidden_channels(c2, o["e"])
        super().__init__(c1, c2, n, shortcut, 1, o["e"])
        self._init_attention(self.c, o, kind, rest)


@register_block
class AttnC3k2(_C2fPath, C3k2):
    """ultralytics' ``C3k2`` (YOLO11) plus ``depth`` transformer layers on the output of its last inner block.

    Same submodule names and shapes as ``C3k2`` (bottlenecks, or ``C3k`` blocks with ``c3k``), so a stock YOLO11
    checkpoint's tensors transfer; loaded from one, the gains start at 0 and the block computes exactly that ``C3k2``.

    YAML: ``[-1, n, AttnC3k2, [c2, c3k, kind, {options}]]`` (``c3k`` as ``C3k2``'s second argument; ultralytics sets it
    at scales m/l/x).

    Args:
        c1: Input channels.
        c2: Output channels.
        n: Number of inner blocks (as for ``C3k2``; depth-scaled).
        c3k: ``C3k`` inner blocks instead of bottlenecks, as ``C3k2``'s.
        kind: Attention kind (see :func:`~yolo_attn.blocks.attention_kinds`).
        options: As for :class:`AttnC2f`, plus ``shortcut`` (true, as ``C3k2``'s default).

    Examples:
        >>> AttnC3k2(32, 64, 1, False, "local", {"window": 3})(torch.randn(1, 32, 10, 12)).shape
        torch.Size([1, 64, 10, 12])
    """

    stock_args = ("c3k",)

    def __init__(self, c1: int, c2: int, n: int = 1, c3k: bool = False, kind: str = "full",
                 options: Mapping | None = None) -> None:
        _check_n(n, "number of inner blocks, as for C3k2")
        if not isinstance(c3k, bool):
            raise ValueError(f"c3k={c3k!r} must be true or false (C3k2's second argument)")
        _no_positional_option(options, "c3k", "AttnC3k2", "C3k2")
        o, rest = _block_options(options, "AttnC3k2", shortcut=True, **PATH_OPTIONS)
        _hidden_channels(c2, o["e"])
        super().__init__(c1, c2, n, c3k, o["e"], False, 1, o["shortcut"])
        self._init_attention(self.c, o, kind, rest)
