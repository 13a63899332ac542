"""Generic multi-head attention module over ``[B, N, C]`` tokens for any mask-defined pattern."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .functional import PATTERNS, attend, mixed_groups
from .options import resolve

__all__ = ["Attention", "rel_pos_extent"]

#: Relative-offset extent of the bias table for ``full`` attention when ``rel_pos=True`` (larger offsets clip).
FULL_REL_POS_EXTENT = 16


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


class Attention(nn.Module):
    """Multi-head self-attention over ``[B, N, C]`` tokens of an ``h x w`` map under a mask-defined pattern.

    ``qkv`` and ``proj`` are linear layers; the attention itself is :func:`~yolo_attn.attention.attend`, whose
    index plans are cached per ``(pattern, h, w, options, device)`` outside the module (never in ``state_dict``).

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
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads} (dim % num_heads = "
                             f"{dim % max(num_heads, 1)})")
        for name, p in (("attn_drop", attn_drop), ("proj_drop", proj_drop)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name}={p} must be in [0, 1)")
        spec, options = resolve(PATTERNS, pattern, pattern_options)
        if spec.name == "mixed":
            total = sum(count for _, _, count in mixed_groups(options))
            if total != num_heads:
                raise ValueError(f"heads={dict(options['heads'])} sums to {total}, expected num_heads={num_heads}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.pattern, self.pattern_options = spec.name, options
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
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
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = attend(
            q, k, v, self.pattern, hw=tuple(hw), rel_pos_bias=self.rel_pos_bias,
            dropout_p=self.attn_drop if self.training else 0.0, **self.pattern_options,
        )
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))

    def extra_repr(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.pattern_options.items() if not isinstance(v, torch.Tensor))
        return f"dim={self.dim}, num_heads={self.num_heads}, pattern={self.pattern!r}" + (f", {opts}" if opts else "")
