"""YOLO-facing blocks: NCHW modules with ultralytics-style positional ``(c1, c2, n, ...)`` signatures.

This is the only layer of yolo_attn that knows YOLO conventions. Every attention block takes the same two YAML
arguments after the channels: the attention *kind* (a plain word) and an *options* mapping::

    - [-1, 3, C3Attn, [1024]]                                     # full attention, the C3TR slot
    - [-1, 1, C3Attn, [256, local, {window: 7, heads: 2}]]        # any pattern of the attention core
    - [-1, 1, C3Attn, [512, mixed, {heads: {local: 2, dilated: 1, global: 1}, window: 7}]]
    - [-1, 1, AttnBlock, [256, linear, {pos: cpe}]]               # standalone, anywhere in the neck
    - [-1, 1, PatchEmbed, [128, 4]]                               # ViT stem: 4x4 patches

Kinds are the mask patterns of :mod:`yolo_attn.attention.functional` (``full, local, dilated, window, axial, ...``)
and the learned-pattern families (``tokens``, ``cluster``, ``sinkhorn``, ``linear``). Options are block options
(:data:`~yolo_attn.blocks.spec.BLOCK_OPTIONS`) plus the options of the chosen kind; anything else is rejected with the allowed names.
Because the seam (:mod:`yolo_attn.integration`) hands our YAML arguments over untouched, strings and mappings
arrive exactly as written; constructors raise ``ValueError`` naming the argument and the allowed values, and the
seam prefixes the layer index.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from ultralytics.nn.modules import Conv

from ..integration import register_block
from .spec import FAMILIES, PositionalEncoding, attention_kinds, build_attention, canonical_kind

__all__ = [
    "AttnBlock",
    "BoTBlock",
    "C3Attn",
    "PatchEmbed",
    "TransformerLayer",
    "TransformerStack",
    "attention_kinds",
    "build_attention",
]

class TransformerLayer(nn.Module):
    """Pre-norm transformer layer on tokens ``[B, N, C]``: ``t + attn(LN(t), hw)``, then ``t + MLP(LN(t))``.

    Args:
        dim: Channels ``C``.
        attn: Token attention with ``forward(x, hw)`` (see :func:`build_attention`).
        mlp_ratio: MLP hidden width relative to ``dim``.

    Examples:
        >>> layer = TransformerLayer(64, build_attention(64, "full")[0])
        >>> layer(torch.randn(2, 20, 64), (4, 5)).shape
        torch.Size([2, 20, 64])
    """

    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        if not (isinstance(mlp_ratio, (int, float)) and not isinstance(mlp_ratio, bool) and mlp_ratio > 0):
            raise ValueError(f"mlp_ratio={mlp_ratio!r} must be a number > 0")
        hidden = max(int(dim * mlp_ratio), 1)
        self.norm1, self.attn = nn.LayerNorm(dim), attn
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Map ``[B, N, C]`` to ``[B, N, C]``."""
        t = t + self.attn(self.norm1(t), hw)
        return t + self.mlp(self.norm2(t))


class TransformerStack(nn.Module):
    """``n`` transformer layers of one attention kind on a feature map ``[B, C, H, W]``, positional encoding first.

    ``pos`` is applied once at the entry: ``cpe`` as a depthwise conv on the map, ``sincos`` / ``learned`` added to
    the tokens, ``rel`` as a bias inside every layer's attention, ``none`` not at all.

    Args:
        dim: Channels ``C``.
        n: Number of layers.
        kind: Attention kind (see :func:`attention_kinds`).
        options: YAML options (see :func:`build_attention`).

    Examples:
        >>> TransformerStack(64, 2, "local", {"window": 3})(torch.randn(1, 64, 6, 7)).shape
        torch.Size([1, 64, 6, 7])
    """

    def __init__(self, dim: int, n: int = 1, kind: str = "full", options: Mapping | None = None) -> None:
        super().__init__()
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r} (number of layers) must be an int >= 1")
        layers = []
        for _ in range(n):
            attn, rest = build_attention(dim, kind, options)
            layers.append(TransformerLayer(dim, attn, rest.get("mlp_ratio", 2.0)))
        self.layers = nn.ModuleList(layers)
        self.kind, self.pos_kind = canonical_kind(kind), rest["pos"]
        self.pos = PositionalEncoding(rest["pos"], dim, rest["heads"])

    def __len__(self) -> int:
        return len(self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[B, C, H, W]`` to ``[B, C, H, W]``."""
        x = self.pos.map(x)
        b, c, h, w = x.shape
        t = self.pos.tokens(x.flatten(2).transpose(1, 2), (h, w))
        for layer in self.layers:
            t = layer(t, (h, w))
        return t.transpose(1, 2).reshape(b, c, h, w)


def _ratio(options: Mapping | None, default: float) -> tuple[float, dict]:
    """Split the hidden-channel ratio ``e`` off a block's options (a copy; non-mappings pass through to validation)."""
    opts = dict(options or {}) if isinstance(options, Mapping) else options
    e = opts.pop("e", default) if isinstance(opts, dict) else default
    if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 < e <= 4:
        raise ValueError(f"e={e!r} (hidden channel ratio) must be a number in (0, 4]")
    return e, opts


@register_block
class C3Attn(nn.Module):
    """CSP bottleneck with 3 convolutions whose inner blocks are transformer layers of any attention kind.

    With the defaults it is a fused drop-in for ultralytics' ``C3TR`` (same slot, same channels): full attention
    through the fused core, one qkv projection, pre-norm layers.

    YAML: ``[-1, n, C3Attn, [c2, kind, {options}]]``, e.g. ``[-1, 1, C3Attn, [256, local, {window: 7}]]``.

    Args:
        c1: Input channels.
        c2: Output channels.
        n: Number of transformer layers.
        kind: Attention kind (see :func:`attention_kinds`).
        options: Block options (``heads`` or ``head_dim`` (default 32), ``mlp_ratio`` (2), ``pos``, ``e`` (0.5)) and
            the options of ``kind``.

    Examples:
        >>> C3Attn(64, 128, 1)(torch.randn(1, 64, 20, 20)).shape
        torch.Size([1, 128, 20, 20])
    """

    def __init__(self, c1: int, c2: int, n: int = 1, kind: str = "full", options: Mapping | None = None) -> None:
        super().__init__()
        e, options = _ratio(options, 0.5)
        c_ = int(c2 * e)
        if c_ < 1:
            raise ValueError(f"e={e} leaves no hidden channels at c2={c2}; use a larger e")
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = TransformerStack(c_, n, kind, options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[B, c1, H, W]`` to ``[B, c2, H, W]``."""
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


@register_block
class AttnBlock(nn.Module):
    """Standalone attention layer for any slot: optional 1x1 conv ``c1 -> c2``, then ``n`` transformer layers.

    YAML: ``[-1, n, AttnBlock, [c2, kind, {options}]]``; ``e`` is not used (attention runs on all ``c2`` channels).

    Args:
        c1: Input channels.
        c2: Output channels.
        n: Number of transformer layers.
        kind: Attention kind (see :func:`attention_kinds`).
        options: As for :class:`C3Attn`, without ``e``.

    Examples:
        >>> AttnBlock(32, 64, 1, "axial")(torch.randn(1, 32, 12, 10)).shape
        torch.Size([1, 64, 12, 10])
    """

    def __init__(self, c1: int, c2: int, n: int = 1, kind: str = "full", options: Mapping | None = None) -> None:
        super().__init__()
        if isinstance(options, Mapping) and "e" in options:
            raise ValueError("option 'e' is not used by AttnBlock (attention runs on all c2 channels); remove it")
        self.conv = Conv(c1, c2, 1, 1) if c1 != c2 else nn.Identity()
        self.m = TransformerStack(c2, n, kind, options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[B, c1, H, W]`` to ``[B, c2, H, W]``."""
        return self.m(self.conv(x))


class _BoTBottleneck(nn.Module):
    """1x1 conv -> multi-head self-attention (pos encoding first) -> BN + SiLU -> 1x1 conv, plus the shortcut."""

    def __init__(self, c1: int, c2: int, e: float, kind: str, options: dict) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        attn, rest = build_attention(c_, kind, options)
        if "mlp_ratio" in rest:
            raise ValueError("option 'mlp_ratio' is not used by BoTBlock (no MLP); remove it")
        self.kind = canonical_kind(kind)
        self.pos = PositionalEncoding(rest["pos"], c_, rest["heads"])
        self.attn, self.bn = attn, nn.Sequential(nn.BatchNorm2d(c_), nn.SiLU())
        self.cv2 = Conv(c_, c2, 1, 1, act=False)
        self.shortcut = nn.Identity() if c1 == c2 else Conv(c1, c2, 1, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pos.map(self.cv1(x))
        b, c, h, w = y.shape
        t = self.pos.tokens(y.flatten(2).transpose(1, 2), (h, w))
        y = self.attn(t, (h, w)).transpose(1, 2).reshape(b, c, h, w)
        return nn.functional.silu(self.cv2(self.bn(y)) + self.shortcut(x))


@register_block
class BoTBlock(nn.Module):
    """BoTNet-style bottlenecks: the 3x3 conv of a ResNet bottleneck replaced by multi-head self-attention.

    Defaults follow BoTNet: full attention with a relative position bias (``pos: rel``), ``e = 0.25``.
    YAML: ``[-1, n, BoTBlock, [c2, kind, {options}]]``; ``mlp_ratio`` is not used.

    Args:
        c1: Input channels.
        c2: Output channels.
        n: Number of bottlenecks (the first maps ``c1 -> c2`` with a projection shortcut when they differ).
        kind: Attention kind (see :func:`attention_kinds`).
        options: As for :class:`C3Attn`; ``pos`` defaults to ``rel`` for mask patterns, ``e`` to 0.25.

    Examples:
        >>> BoTBlock(64, 128, 1)(torch.randn(1, 64, 10, 10)).shape
        torch.Size([1, 128, 10, 10])
    """

    def __init__(self, c1: int, c2: int, n: int = 1, kind: str = "full", options: Mapping | None = None) -> None:
        super().__init__()
        e, options = _ratio(options, 0.25)
        if isinstance(options, dict) and "pos" not in options and isinstance(kind, str) and kind not in FAMILIES:
            options["pos"] = "rel"
        self.m = nn.Sequential(*(_BoTBottleneck(c1 if i == 0 else c2, c2, e, kind, options) for i in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[B, c1, H, W]`` to ``[B, c2, H, W]``."""
        return self.m(x)


class PatchEmbed(nn.Module):
    """ViT patch embedding: a convolution whose kernel and stride equal the patch size (+ BatchNorm, no activation).

    YAML (``n`` must be 1): ``[-1, 1, PatchEmbed, [c2, patch]]``, e.g. ``[-1, 1, PatchEmbed, [128, 4]]`` turns a
    ``640 x 640`` image into a ``160 x 160`` map of 4x4 patches (stride 4, P2).

    Args:
        c1: Input channels.
        c2: Output channels (embedding width).
        patch: Patch size = kernel = stride; the input size must be a multiple of it.

    Examples:
        >>> PatchEmbed(3, 32, 4)(torch.randn(1, 3, 64, 48)).shape
        torch.Size([1, 32, 16, 12])
    """

    def __init__(self, c1: int, c2: int, patch: int = 4) -> None:
        super().__init__()
        if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
            raise ValueError(f"patch={patch!r} must be an int >= 1 (kernel = stride = patch)")
        self.patch = patch
        self.proj = Conv(c1, c2, patch, patch, 0, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[B, c1, H, W]`` to ``[B, c2, H / patch, W / patch]``."""
        return self.proj(x)


register_block(PatchEmbed, repeat=False)
