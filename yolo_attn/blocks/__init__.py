"""YOLO-facing blocks: NCHW modules with ultralytics-style positional ``(c1, c2, n, ...)`` signatures.

This is the only layer of yolo_attn that knows YOLO conventions. Every attention block takes the same two YAML
arguments after the channels: the attention *kind* (a plain word) and an *options* mapping::

    - [-1, 3, C3Attn, [1024]]                                           # stock C3 + full attention (the C3TR slot)
    - [-1, 3, C3Attn, [512, local, {window: 7, shortcut: false}]]       # a neck C3 of yolov5.yaml + local attention
    - [-1, 3, C3Attn, [512, mixed, {heads: {local: 2, dilated: 1, global: 1}, window: 7, shortcut: false}]]
    - [-1, 3, BoTBlock, [1024]]                                         # C3 whose bottlenecks gain an MHSA branch
    - [-1, 1, AttnBlock, [256, linear, {pos: cpe}]]                     # standalone, anywhere in the neck
    - [-1, 1, PatchEmbed, [128, 4]]                                     # ViT stem: 4x4 patches

``C3Attn`` and ``BoTBlock`` *augment* ultralytics' ``C3``: they subclass it (same ``cv1, cv2, cv3, m.{i}`` submodules
and shapes, ``n`` = bottlenecks as in ``C3``) and add attention as residual branches whose contributions are scaled
by per-channel LayerScale gains (:class:`LayerScale`). Loading a stock checkpoint (the block's C3 tensors present, its
attention tensors absent) sets the gains to 0, so the block starts as exactly the stock C3 it replaces
(``layer_scale: auto``, the default); from scratch the gains start at 1. ``AttnC2f`` and ``AttnC3k2``
(:mod:`yolo_attn.blocks.csp`) do the same for the ``C2f`` of YOLOv8 and the ``C3k2`` of YOLO11, taking the stock
row's arguments first (``[c2, shortcut | c3k, kind, {options}]``).

Kinds are the mask patterns of :mod:`yolo_attn.attention.functional` (``full, local, dilated, window, axial, ...``)
and the learned-pattern families (``tokens``, ``cluster``, ``sinkhorn``, ``linear``). Options are block options
(:data:`~yolo_attn.blocks.spec.BLOCK_OPTIONS`) plus the options of the chosen kind; anything else is rejected with the
allowed names. Because the seam (:mod:`yolo_attn.integration`) hands our YAML arguments over untouched, strings and
mappings arrive exactly as written; constructors raise ``ValueError`` naming the argument and the allowed values, and
the seam prefixes the layer index.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from ultralytics.nn.modules import C3, Bottleneck, Conv

from ..attention.tiling import concrete_sizes
from ..integration import register_block
from .spec import FAMILIES, PositionalEncoding, attention_kinds, build_attention, canonical_kind

__all__ = [
    "AttnBlock",
    "AttnC2f",
    "AttnC3k2",
    "BoTBlock",
    "C3Attn",
    "LayerScale",
    "MHSABranch",
    "PatchEmbed",
    "TransformerLayer",
    "TransformerStack",
    "attention_kinds",
    "build_attention",
    "gains",
    "mean_gain",
]

#: ``pos`` kinds that add to the feature map / tokens (``rel`` lives inside the attention, ``none`` does nothing).
_STREAM_POS = ("cpe", "sincos", "learned")


class LayerScale(nn.Module):
    """Per-channel gain on the last dimension: ``x * gamma`` (CaiT's LayerScale), ``gamma`` of shape ``[dim]``.

    Every attention branch of a block ends in one; a gain of 0 makes the branch an exact no-op while its weights stay
    random, so the gain still gets a gradient and the branch is not dead.

    Args:
        dim: Channels (size of the last dimension of the input).
        init_values: Initial gain.

    Examples:
        >>> LayerScale(8, 0.0)(torch.ones(2, 5, 8)).abs().sum().item()
        0.0
    """

    def __init__(self, dim: int, init_values: float = 1.0) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., dim]`` scaled channel-wise."""
        return x * self.gamma.to(x.dtype)


def gains(module: nn.Module) -> list[nn.Parameter]:
    """The LayerScale gains inside ``module`` (every attention branch of a block has at least one).

    Args:
        module: A block, a model, or any module.

    Returns:
        The ``gamma`` parameters, in module order.

    Examples:
        >>> len(gains(C3Attn(16, 32, 1, "local", {"window": 3})))  # ls_pos (cpe), ls1 and ls2
        3
    """
    return [m.gamma for m in module.modules() if isinstance(m, LayerScale)]


def mean_gain(module: nn.Module) -> float | None:
    """Mean absolute LayerScale gain inside ``module`` (None without attention): how far its attention is switched on.

    0 where a block was loaded from a stock checkpoint (its attention a no-op), 1 where a from-scratch model starts;
    after a fine-tune from a stock checkpoint it says how much of the attention the training has turned on.

    Args:
        module: A block, a model, or any module.

    Returns:
        The mean of ``|gamma|`` over every gain's channels, or None when ``module`` has no gains.

    Examples:
        >>> mean_gain(C3Attn(16, 32, 1, "local", {"window": 3}))  # from scratch: every gain 1
        1.0
    """
    g = [p.detach().abs().flatten().float() for p in gains(module)]
    return float(torch.cat(g).mean()) if g else None


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer on tokens ``[B, N, C]``: ``t + ls1(attn(LN(t), hw))``, then ``t + ls2(MLP(LN(t)))``.

    Args:
        dim: Channels ``C``.
        attn: Token attention with ``forward(x, hw)`` (see :func:`build_attention`).
        mlp_ratio: MLP hidden width relative to ``dim``.
        init_values: Initial LayerScale gain of both residual branches.

    Examples:
        >>> layer = TransformerLayer(64, build_attention(64, "full")[0])
        >>> layer(torch.randn(2, 20, 64), (4, 5)).shape
        torch.Size([2, 20, 64])
    """

    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: float = 2.0, init_values: float = 1.0) -> None:
        super().__init__()
        if not (isinstance(mlp_ratio, (int, float)) and not isinstance(mlp_ratio, bool) and mlp_ratio > 0):
            raise ValueError(f"mlp_ratio={mlp_ratio!r} must be a number > 0")
        hidden = max(int(dim * mlp_ratio), 1)
        self.norm1, self.attn, self.ls1 = nn.LayerNorm(dim), attn, LayerScale(dim, init_values)
        self.norm2, self.ls2 = nn.LayerNorm(dim), LayerScale(dim, init_values)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Map ``[B, N, C]`` to ``[B, N, C]``."""
        t = t + self.ls1(self.attn(self.norm1(t), hw))
        return t + self.ls2(self.mlp(self.norm2(t)))


class TransformerStack(nn.Module):
    """``depth`` transformer layers of one attention kind on a feature map ``[B, C, H, W]``, positional encoding first.

    ``pos`` is applied once at the entry: ``cpe`` as a depthwise conv on the map, ``sincos`` / ``learned`` added to
    the tokens (both through a LayerScale gain ``ls_pos``, so that with every gain at 0 the stack is the identity),
    ``rel`` as a bias inside every layer's attention, ``none`` not at all.

    Args:
        dim: Channels ``C``.
        depth: Number of layers.
        kind: Attention kind (see :func:`attention_kinds`).
        options: YAML options (see :func:`build_attention`).
        init_values: Initial value of every LayerScale gain (1: a plain pre-norm transformer; 0: the identity).

    Examples:
        >>> TransformerStack(64, 2, "local", {"window": 3})(torch.randn(1, 64, 6, 7)).shape
        torch.Size([1, 64, 6, 7])
    """

    def __init__(
        self, dim: int, depth: int = 1, kind: str = "full", options: Mapping | None = None, init_values: float = 1.0
    ) -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth={depth!r} (number of attention layers) must be an int >= 1")
        layers = []
        for _ in range(depth):
            attn, rest = build_attention(dim, kind, options)
            layers.append(TransformerLayer(dim, attn, rest.get("mlp_ratio", 2.0), init_values))
        self.layers = nn.ModuleList(layers)
        self.kind, self.pos_kind = canonical_kind(kind), rest["pos"]
        self.pos = PositionalEncoding(rest["pos"], dim, rest["heads"])
        self.ls_pos = LayerScale(dim, init_values) if rest["pos"] in _STREAM_POS else None

    def __len__(self) -> int:
        return len(self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[B, C, H, W]`` to ``[B, C, H, W]``."""
        b, c, h, w = x.shape
        h, w = concrete_sizes(h, w)  # ints in a fixed-size trace: the attention's plans become graph constants
        t = x.flatten(2).transpose(1, 2)
        if self.ls_pos is not None:  # the encoding's change to the stream goes through a gain
            p = self.pos.tokens(self.pos.map(x).flatten(2).transpose(1, 2), (h, w))
            t = t + self.ls_pos(p - t)
        for layer in self.layers:
            t = layer(t, (h, w))
        return t.transpose(1, 2).reshape(b, c, h, w)


# ------------------------------------------------------------------------------------------------ block options
def _block_options(options: Any, block: str, **defaults: Any) -> tuple[dict[str, Any], Any]:
    """Split a block's own options (``defaults``' keys) off the YAML options; validate them.

    Block options of other blocks (``shortcut`` for ``AttnBlock``, ``depth`` for ``BoTBlock``, ...) are rejected by
    name. Returns ``(values, remaining options)``; a non-mapping passes through to :func:`build_attention`'s check.
    """
    if not isinstance(options, Mapping):
        return dict(defaults), options
    rest = dict(options)
    for key in ("e", "shortcut", "depth", "split", "layer_scale"):
        if key in rest and key not in defaults:
            raise ValueError(f"option {key!r} is not used by {block}; remove it")
    values = {k: rest.pop(k, v) for k, v in defaults.items()}
    e, shortcut, depth, split, ls = (values.get(k) for k in ("e", "shortcut", "depth", "split", "layer_scale"))
    if "split" in values and (isinstance(split, bool) or not isinstance(split, (int, float)) or not 0 < split <= 1):
        raise ValueError(f"split={split!r} (fraction of the C3's hidden channels that attention sees) must be a "
                         "number in (0, 1]")
    if "e" in values and (isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 < e <= 4):
        raise ValueError(f"e={e!r} (hidden channel ratio) must be a number in (0, 4]")
    if "shortcut" in values and not isinstance(shortcut, bool):
        raise ValueError(f"shortcut={shortcut!r} must be true or false (as the C3 it augments: false in the neck)")
    if "depth" in values and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise ValueError(f"depth={depth!r} (number of attention layers) must be an int >= 1")
    if "layer_scale" in values and ls != "auto" and (
        isinstance(ls, bool) or not isinstance(ls, (int, float)) or not ls >= 0
    ):
        raise ValueError(f"layer_scale={ls!r} must be auto (1 from scratch, 0 when loaded from a stock checkpoint) "
                         "or a number >= 0 (the initial gain, kept when loading)")
    return values, rest


def _check_n(n: Any, what: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} ({what}) must be an int >= 1")


class _AugmentsStock:
    """Mixin for blocks that add attention branches to a stock ultralytics module (the next base class).

    With ``layer_scale == "auto"``, loading a state dict that holds every tensor of the stock module and none of the
    branches (a stock checkpoint, through ultralytics' ``intersect_dicts`` + ``load_state_dict(strict=False)``) sets
    every LayerScale gain to 0: the block then computes exactly what the stock module computes. A state dict with the
    branches (our own checkpoints) loads unchanged.
    """

    layer_scale: str | float = "auto"

    def _branch_prefixes(self) -> tuple[str, ...]:
        return tuple(f"{n}." for n, m in self.named_modules() if isinstance(m, (TransformerStack, MHSABranch)))

    def stock_keys(self) -> list[str]:
        """State-dict keys (relative) of the stock module this block augments."""
        branch = self._branch_prefixes()
        return [k for k in self.state_dict() if not k.startswith(branch)]

    @property
    def starts_as_identity(self) -> bool:
        """Whether every attention gain is 0 (the block computes exactly its stock module)."""
        return all(not g.detach().any() for g in gains(self))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        if self.layer_scale == "auto":
            given = {k[len(prefix):] for k in state_dict if k.startswith(prefix)}
            branch = self._branch_prefixes()
            stock = set(self.stock_keys())
            if stock and stock <= given and not any(k.startswith(branch) for k in given):
                with torch.no_grad():
                    for g in gains(self):
                        g.zero_()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


def _initial_gain(layer_scale: str | float) -> float:
    return 1.0 if layer_scale == "auto" else float(layer_scale)


#: Block options of a stock module augmented by a :class:`TransformerStack` on its hidden path (and their defaults).
PATH_OPTIONS = {"e": 0.5, "depth": 1, "split": 1.0, "layer_scale": "auto"}


def _hidden_channels(c2: int, e: float) -> int:
    c_ = int(c2 * e)
    if c_ < 1:
        raise ValueError(f"e={e} leaves no hidden channels at c2={c2}; use a larger e")
    return c_


class _AttentionPath(_AugmentsStock):
    """Mixin: a :class:`TransformerStack` on a stock block's hidden path, on the first ``split`` of its channels.

    ``C3Attn`` (after a ``C3``'s bottlenecks), ``AttnC2f`` and ``AttnC3k2`` (after the last bottleneck of a ``C2f`` /
    ``C3k2``) share it: the options ``depth``, ``split``, ``layer_scale`` and the attention's own, the gating and the
    zeroing on a stock load (:class:`_AugmentsStock`).
    """

    def _init_attention(self, channels: int, o: Mapping, kind: str, rest: Any) -> None:
        """Build ``self.attn`` over ``split * channels`` channels (call after the stock module's ``__init__``)."""
        self.dim = max(int(channels * o["split"]), 1)  # channels the attention sees
        self.layer_scale = o["layer_scale"]
        self.attn = TransformerStack(self.dim, o["depth"], kind, rest, _initial_gain(self.layer_scale))

    def _attend(self, y: torch.Tensor) -> torch.Tensor:
        """``[B, channels, H, W]`` with the attention applied to its first ``dim`` channels."""
        if self.dim == y.shape[1]:
            return self.attn(y)
        return torch.cat((self.attn(y[:, : self.dim]), y[:, self.dim :]), 1)


@register_block
class C3Attn(_AttentionPath, C3):
    """ultralytics' ``C3`` plus ``depth`` transformer layers of any attention kind on its bottleneck path.

    ``cv3(cat(attn(m(cv1(x))), cv2(x)))``: the stock C3 computation with a :class:`TransformerStack` after the
    bottlenecks, whose residual branches (attention, MLP, positional encoding) are scaled by LayerScale gains. Same
    submodule names and shapes as ``C3`` (``cv1, cv2, cv3, m.{i}.cv1/cv2``), so every tensor of a stock C3 transfers;
    loaded from a stock checkpoint the gains start at 0 and the block computes exactly that C3 (``layer_scale: auto``).
    With ``split < 1`` the attention runs on the first ``split * c_`` hidden channels only and the others pass by
    (as in YOLOv10's PSA): a cheaper block for large maps.

    YAML: ``[-1, n, C3Attn, [c2, kind, {options}]]``, e.g. ``[-1, 3, C3Attn, [512, local, {window: 7, shortcut:
    false}]]`` in the slot of the neck's ``[-1, 3, C3, [512, False]]``.

    Args:
        c1: Input channels.
        c2: Output channels.
        n: Number of bottlenecks (as for ``C3``; depth-scaled).
        kind: Attention kind (see :func:`attention_kinds`).
        options: Block options (``shortcut`` (true; false where the stock C3 has ``False``), ``depth`` (1 attention
            layer), ``split`` (1: attention on all hidden channels), ``layer_scale`` (``auto``), ``heads`` or
            ``head_dim`` (32), ``mlp_ratio`` (2), ``pos``, ``e`` (0.5; another value changes the C3's widths, so its
            tensors no longer transfer)) and the options of ``kind``.

    Examples:
        >>> C3Attn(64, 128, 1)(torch.randn(1, 64, 20, 20)).shape
        torch.Size([1, 128, 20, 20])
    """

    def __init__(self, c1: int, c2: int, n: int = 1, kind: str = "full", options: Mapping | None = None) -> None:
        _check_n(n, "number of bottlenecks, as for C3")
        o, rest = _block_options(options, "C3Attn", shortcut=True, **PATH_OPTIONS)
        c_ = _hidden_channels(c2, o["e"])
        super().__init__(c1, c2, n, o["shortcut"], 1, o["e"])
        self._init_attention(c_, o, kind, rest)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[B, c1, H, W]`` to ``[B, c2, H, W]``."""
        return self.cv3(torch.cat((self._attend(self.m(self.cv1(x))), self.cv2(x)), 1))


@register_block
class AttnBlock(nn.Module):
    """Standalone attention layer for any slot: optional 1x1 conv ``c1 -> c2``, then ``n`` transformer layers.

    YAML: ``[-1, n, AttnBlock, [c2, kind, {options}]]``; ``e``, ``shortcut`` and ``depth`` are not used. An inserted
    layer shifts the index of every later layer, so a stock checkpoint transfers only the layers before it: to
    fine-tune from stock weights, use :class:`C3Attn` in a C3 slot instead.

    Args:
        c1: Input channels.
        c2: Output channels.
        n: Number of transformer layers.
        kind: Attention kind (see :func:`attention_kinds`).
        options: As for :class:`C3Attn`, without ``e``, ``shortcut`` and ``depth``; ``layer_scale`` is the initial
            gain (``auto`` = 1: there is no stock layer to preserve).

    Examples:
        >>> AttnBlock(32, 64, 1, "axial")(torch.randn(1, 32, 12, 10)).shape
        torch.Size([1, 64, 12, 10])
    """

    def __init__(self, c1: int, c2: int, n: int = 1, kind: str = "full", options: Mapping | None = None) -> None:
        super().__init__()
        _check_n(n, "number of transformer layers")
        o, rest = _block_options(options, "AttnBlock", layer_scale="auto")
        self.conv = Conv(c1, c2, 1, 1) if c1 != c2 else nn.Identity()
        self.m = TransformerStack(c2, n, kind, rest, _initial_gain(o["layer_scale"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[B, c1, H, W]`` to ``[B, c2, H, W]``."""
        return self.m(self.conv(x))


class MHSABranch(nn.Module):
    """BoTNet's multi-head self-attention on a map ``[B, C, H, W]``, positional encoding inside, output gated.

    ``ls(attn(pos(x)))``: the branch :class:`BoTBottleneck` adds beside its 3x3 conv.

    Args:
        dim: Channels.
        kind: Attention kind.
        options: Attention and positional-encoding options (``mlp_ratio`` is refused: no MLP).
        init_values: Initial LayerScale gain.

    Examples:
        >>> MHSABranch(32, "full", {}, 0.0)(torch.randn(1, 32, 5, 6)).abs().max().item()
        0.0
    """

    def __init__(self, dim: int, kind: str, options: Any, init_values: float) -> None:
        super().__init__()
        attn, rest = build_attention(dim, kind, options)
        if "mlp_ratio" in rest:
            raise ValueError("option 'mlp_ratio' is not used by BoTBlock (no MLP); remove it")
        self.kind = canonical_kind(kind)
        self.pos = PositionalEncoding(rest["pos"], dim, rest["heads"])
        self.attn, self.ls = attn, LayerScale(dim, init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[B, C, H, W]`` to ``[B, C, H, W]``."""
        y = self.pos.map(x)
        b, c, h, w = y.shape
        h, w = concrete_sizes(h, w)
        t = self.ls(self.attn(self.pos.tokens(y.flatten(2).transpose(1, 2), (h, w)), (h, w)))
        return t.transpose(1, 2).reshape(b, c, h, w)


class BoTBottleneck(Bottleneck):
    """ultralytics' C3 bottleneck (1x1 conv, 3x3 conv, optional shortcut) with an MHSA branch beside the 3x3 conv.

    ``h = cv1(x)``; ``y = cv2(h) + ls(MHSA(h))``; ``x + y`` with the shortcut. BoTNet replaces the 3x3 conv with
    multi-head self-attention; here the attention is added next to it, so the stock conv's weights keep their use.

    Args:
        c: Channels (in = out, as in the bottlenecks of a C3).
        shortcut: Residual connection (as the stock C3).
        kind: Attention kind.
        options: Attention and positional-encoding options.
        init_values: Initial LayerScale gain of the branch.

    Examples:
        >>> BoTBottleneck(32, True, "full", {"pos": "rel"}, 0.0)(torch.randn(1, 32, 6, 6)).shape
        torch.Size([1, 32, 6, 6])
    """

    def __init__(self, c: int, shortcut: bool, kind: str, options: Any, init_values: float) -> None:
        super().__init__(c, c, shortcut, 1, k=((1, 1), (3, 3)), e=1.0)
        self.branch = MHSABranch(c, kind, options, init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[B, c, H, W]`` to ``[B, c, H, W]``."""
        h = self.cv1(x)
        y = self.cv2(h) + self.branch(h)
        return x + y if self.add else y


@register_block
class BoTBlock(_AugmentsStock, C3):
    """ultralytics' ``C3`` whose ``n`` bottlenecks each gain a BoTNet multi-head self-attention branch.

    Defaults follow BoTNet: full attention with a relative position bias (``pos: rel``). Same submodule names and
    shapes as ``C3`` (the branches are ``m.{i}.branch``); loaded from a stock checkpoint the branch gains start at 0
    (``layer_scale: auto``). YAML: ``[-1, n, BoTBlock, [c2, kind, {options}]]``; ``mlp_ratio`` and ``depth`` are not
    used (one attention per bottleneck).

    Args:
        c1: Input channels.
        c2: Output channels.
        n: Number of bottlenecks (as for ``C3``; depth-scaled), each with an attention branch.
        kind: Attention kind (see :func:`attention_kinds`).
        options: As for :class:`C3Attn` without ``mlp_ratio`` and ``depth``; ``pos`` defaults to ``rel`` for mask
            patterns.

    Examples:
        >>> BoTBlock(64, 128, 1)(torch.randn(1, 64, 10, 10)).shape
        torch.Size([1, 128, 10, 10])
    """

    def __init__(self, c1: int, c2: int, n: int = 1, kind: str = "full", options: Mapping | None = None) -> None:
        _check_n(n, "number of bottlenecks, as for C3")
        o, rest = _block_options(options, "BoTBlock", e=0.5, shortcut=True, layer_scale="auto")
        if isinstance(rest, dict) and "pos" not in rest and isinstance(kind, str) and kind not in FAMILIES:
            rest["pos"] = "rel"
        c_ = _hidden_channels(c2, o["e"])
        super().__init__(c1, c2, n, o["shortcut"], 1, o["e"])
        self.layer_scale = o["layer_scale"]
        init = _initial_gain(self.layer_scale)
        self.m = nn.Sequential(*(BoTBottleneck(c_, o["shortcut"], kind, rest, init) for _ in range(n)))


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

from .csp import AttnC2f, AttnC3k2  # noqa: E402  (YOLOv8 / YOLO11 blocks; they build on the machinery above)
