"""Multi-head attention modules over ``[B, N, C]`` tokens.

:class:`QKVAttentionBase` is the shared plumbing (qkv projection, head split/merge, output projection, checks) of every
attention module; :class:`Attention` is the generic module for any mask-defined pattern of :func:`attend`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .functional import PATTERNS, attend, mixed_groups
from .options import resolve

__all__ = ["Attention", "QKVAttentionBase", "rel_pos_extent"]

#: Relative-offset extent of the bias table for ``full`` attention when ``rel_pos=True`` (larger offsets clip).
FULL_REL_POS_EXTENT = 16


def _check_prob(name: str, p: float) -> float:
    if not 0.0 <= float(p) < 1.0:
        raise ValueError(f"{name}={p!r} must be a probability in [0, 1)")
    return float(p)


class QKVAttentionBase(nn.Module):
    """Shared plumbing of the attention modules over ``[B, N, C]`` tokens: ``qkv`` Linear, heads, ``proj`` Linear.

    Subclasses implement ``forward(x, hw)`` with :meth:`split_heads` -> their attention core -> :meth:`merge_heads`.

    Args:
        dim: Channels ``C`` of the tokens.
        num_heads: Number of heads; must divide ``dim``.
        qkv_bias: Bias in the qkv projection.
        attn_drop: Dropout probability on attention weights (applied only in training).
        proj_drop: Dropout probability after the output projection (applied only in training).

    Examples:
        >>> base = QKVAttentionBase(64, num_heads=4)
        >>> q, k, v = base.split_heads(torch.randn(2, 10, 64))
        >>> q.shape
        torch.Size([2, 4, 10, 16])
    """

    def __init__(
        self, dim: int, num_heads: int = 8, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0
    ) -> None:
        super().__init__()
        if dim <= 0 or num_heads <= 0:
            raise ValueError(f"{dim=} and {num_heads=} must be positive integers")
        if dim % num_heads:
            raise ValueError(f"{dim=} must be divisible by {num_heads=} (remainder {dim % num_heads})")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.attn_drop = _check_prob("attn_drop", attn_drop)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(_check_prob("proj_drop", proj_drop))

    @property
    def dropout_p(self) -> float:
        """Attention-weight dropout probability to use now: ``attn_drop`` in training, 0.0 in eval."""
        return self.attn_drop if self.training else 0.0

    def check_input(self, x: torch.Tensor, hw: tuple[int, int], extra_tokens: int = 0) -> None:
        """Validate ``x: [B, N, C]`` against ``hw = (H, W)`` (``N = extra_tokens + H * W``) and ``C = dim``.

        Skipped while tracing (sizes are symbolic then; the eager run before the trace validated them)."""
        if torch.jit.is_tracing():
            return
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x.shape={tuple(x.shape)} must be [B, N, C] with C = dim = {self.dim}")
        h, w = hw
        if x.shape[1] != extra_tokens + h * w:
            raise ValueError(f"x.shape[1]={x.shape[1]} does not match hw={tuple(hw)} (expected {h * w + extra_tokens})")

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project ``x: [B, N, C]`` to ``q, k, v``, each ``[B, heads, N, head_dim]``."""
        b, n, _ = x.shape
        return self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)

    def merge_heads(self, out: torch.Tensor) -> torch.Tensor:
        """Merge ``out: [B, heads, N, head_dim]`` to ``[B, N, C]`` and apply the output projection and dropout."""
        b, _, n, _ = out.shape
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, self.dim)))


def rel_pos_extent(pattern: str, options: dict[str, Any]) -> int:
    """Smallest table half-size ``a`` whose offsets ``[-(a-1), a-1]`` cover every attended key of a pattern.

    Args:
        pattern: Registered pattern name (``full``, ``local``, ``dilated``, ``window`` or ``mixed`` of those).
        options: Resolved pattern options.

    Returns:
        ``a``; the table is ``[heads, 2a-1, 2a-1]``. ``full`` gets :data:`FULL_REL_POS_EXTENT` (offsets clip).

    Examples:
        >>> rel_pos_extent("dilated", {"window": 7, "dilation": 2})
        13
    """
    if pattern == "mixed":
        return max(rel_pos_extent(spec.name, sub) for spec, sub, _ in mixed_groups(options))
    if pattern == "full":
        return FULL_REL_POS_EXTENT
    if pattern in ("local", "dilated", "window"):
        return (options["window"] - 1) * options.get("dilation", 1) + 1
    supported = sorted(name for name, spec in PATTERNS.items() if spec.rel_pos)
    raise ValueError(f"rel_pos=True is not supported for pattern {pattern!r}; supported: {supported}")


class Attention(QKVAttentionBase):
    """Multi-head self-attention over ``[B, N, C]`` tokens of an ``h x w`` map under a mask-defined pattern.

    ``qkv`` and ``proj`` are linear layers; the attention itself is :func:`~yolo_attn.attention.attend`, whose
    index plans are cached per ``(pattern, h, w, options, device)`` outside the module (never in ``state_dict``)
    and computed inside the graph from the input's size when traced, so exports run at any input size.

    Args:
        dim: Channels ``C``.
        num_heads: Number of heads; must divide ``dim``.
        pattern: A name in :data:`~yolo_attn.attention.PATTERNS` (or an alias such as ``"stride"``).
        qkv_bias: Bias in the ``qkv`` projection.
        attn_drop: Dropout on attention weights (training only).
        proj_drop: Dropout after the output projection.
        rel_pos: Learned relative position bias ``[num_heads, 2a-1, 2a-1]`` (True: ``a`` from
            :func:`rel_pos_extent`; an int: that ``a``, larger offsets clip). For full/local/dilated/window/mixed.
        **pattern_options: Options of the pattern (``window``, ``dilation``, ``shift``, ``global_idx``, ...).

    Examples:
        >>> attn = Attention(64, num_heads=2, pattern="local", window=7)
        >>> attn(torch.randn(2, 20 * 20, 64), (20, 20)).shape
        torch.Size([2, 400, 64])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        pattern: str = "full",
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        rel_pos: bool | int = False,
        **pattern_options: Any,
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        spec, options = resolve(PATTERNS, pattern, pattern_options)
        if spec.name == "mixed":
            total = sum(count for _, _, count in mixed_groups(options))
            if total != num_heads:
                raise ValueError(f"heads={dict(options['heads'])} sums to {total}, expected num_heads={num_heads}")
        self.pattern, self.pattern_options = spec.name, options
        self.rel_pos_bias: nn.Parameter | None = None
        if rel_pos:
            a = rel_pos_extent(spec.name, options) if rel_pos is True else int(rel_pos)
            self.rel_pos_bias = nn.Parameter(torch.zeros(num_heads, 2 * a - 1, 2 * a - 1))
            nn.init.trunc_normal_(self.rel_pos_bias, std=0.02)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Attend.

        Args:
            x: Tokens ``[B, N, C]`` in row-major order (``N = h*w``, or ``G + h*w`` with leading global tokens).
            hw: Map size ``(h, w)``.

        Returns:
            ``[B, N, C]``.
        """
        q, k, v = self.split_heads(x)
        out = attend(q, k, v, self.pattern, hw=tuple(hw), rel_pos_bias=self.rel_pos_bias, dropout_p=self.dropout_p,
                     **self.pattern_options)
        return self.merge_heads(out)

    def extra_repr(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.pattern_options.items() if not isinstance(v, torch.Tensor))
        return f"dim={self.dim}, num_heads={self.num_heads}, pattern={self.pattern!r}" + (f", {opts}" if opts else "")
