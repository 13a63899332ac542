"""YOLO-facing blocks: NCHW modules with ultralytics-style positional ``(c1, c2, n, ...)`` signatures.

This is the only layer of yolo_attn that knows YOLO conventions. Blocks are registered with
:func:`yolo_attn.integration.register_block`, which is what makes their names usable in YAML model configs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules import Conv

from .integration import register_block

__all__ = ["C3Attn", "TransformerLayer"]


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer on a feature map: ``x + MHSA(LN(x))``, then ``x + MLP(LN(x))``.

    Args:
        dim: Channels ``C``.
        num_heads: Attention heads; must divide ``dim``.
        mlp_ratio: Hidden width of the MLP relative to ``dim``.

    Examples:
        >>> TransformerLayer(64, 4)(torch.randn(2, 64, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
    """

    def __init__(self, dim: int, num_heads: int = 4, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the channels dim={dim}")
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[B, C, H, W]`` to ``[B, C, H, W]``."""
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)  # [B, N, C]
        q, k, v = self.qkv(self.norm1(t)).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)
        t = t + self.proj(a)
        t = t + self.mlp(self.norm2(t))
        return t.transpose(1, 2).reshape(b, c, h, w)


@register_block
class C3Attn(nn.Module):
    """CSP bottleneck with 3 convolutions whose inner blocks are transformer layers (a fused C3TR).

    Args:
        c1: Input channels.
        c2: Output channels.
        n: Number of transformer layers.
        num_heads: Attention heads of each layer.
        e: Hidden channel ratio.

    Examples:
        >>> C3Attn(64, 128, 1)(torch.randn(1, 64, 20, 20)).shape
        torch.Size([1, 128, 20, 20])
    """

    def __init__(self, c1: int, c2: int, n: int = 1, num_heads: int = 4, e: float = 0.5) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(TransformerLayer(c_, num_heads) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[B, c1, H, W]`` to ``[B, c2, H, W]``."""
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))
