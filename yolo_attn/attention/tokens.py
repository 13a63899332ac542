"""Learned global tokens (Longformer / BigBird style "extra" global tokens) over a sparse base pattern.

``G`` learned tokens (``nn.Parameter [G, C]``) are prepended to the ``N = H * W`` spatial tokens (``N_total = G + N``,
tokens first, as everywhere in the library). Specification: ``pattern_mask("global", hw, num_global_tokens=G,
base=..., **base_options)``: a token attends to everything and is attended by everything; a spatial query additionally
attends its base neighbourhood (``local`` window 7 by default; any tiled base pattern such as ``dilated`` or
``window``). With ``G = 0`` this is exactly the base pattern.

The computation is the library's ``attend(..., "global", ...)`` fast path (never ``N x N``): spatial queries attend
their tiled neighbourhood plus the ``G`` token keys, token queries attend all ``G + N`` keys (``G x (G + N)``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .functional import attend
from .modules import QKVAttentionBase

__all__ = ["GlobalTokenAttention"]


class GlobalTokenAttention(QKVAttentionBase):
    """Multi-head attention with ``num_global_tokens`` learned global tokens over a sparse base pattern.

    Args:
        dim: Channels ``C``.
        num_heads: Number of heads; must divide ``dim``.
        qkv_bias: Bias in the qkv projection.
        attn_drop: Attention-weight dropout (training only).
        proj_drop: Output dropout (training only).
        num_global_tokens: ``G >= 0`` learned tokens (``G = 0``: exactly the base pattern).
        base: Base pattern of the spatial tokens (a tiled pattern of ``functional.PATTERNS``: ``local``,
            ``dilated``, ``window``, ...).
        **base_options: Options of the base pattern (e.g. ``window=7``, ``dilation=2``); unknown ones raise
            ``TypeError`` at construction; a base without a tiled fast path raises ``ValueError``.

    Examples:
        >>> attn = GlobalTokenAttention(64, num_heads=4, num_global_tokens=2, base="local", window=3)
        >>> attn(torch.randn(2, 35, 64), (5, 7)).shape
        torch.Size([2, 35, 64])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        num_global_tokens: int = 1,
        base: str = "local",
        **base_options: Any,
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        if num_global_tokens < 0:
            raise ValueError(f"{num_global_tokens=} must be >= 0")
        self.options = {"num_global_tokens": num_global_tokens, "base": base, **base_options}
        probe = torch.zeros(1, 1, num_global_tokens + 1, 1)
        attend(probe, probe, probe, "global", hw=(1, 1), **self.options)  # validate base + options now, not later
        self.num_global_tokens = num_global_tokens
        self.global_tokens = nn.Parameter(torch.empty(num_global_tokens, dim))
        nn.init.trunc_normal_(self.global_tokens, std=0.02)

    def forward(
        self, x: torch.Tensor, hw: tuple[int, int], return_tokens: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend.

        Args:
            x: Spatial tokens ``[B, N, C]``, ``N = H * W`` row-major.
            hw: Feature map size ``(H, W)``.
            return_tokens: Also return the updated global tokens ``[B, G, C]``.

        Returns:
            ``[B, N, C]`` spatial outputs, or ``(spatial, tokens)`` when ``return_tokens``.
        """
        self.check_input(x, hw)
        g = self.num_global_tokens
        xt = torch.cat([self.global_tokens.to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)
        q, k, v = self.split_heads(xt)
        out = attend(q, k, v, "global", hw=tuple(hw), dropout_p=self.dropout_p, **self.options)
        out = self.merge_heads(out)
        return (out[:, g:], out[:, :g]) if return_tokens else out[:, g:]
