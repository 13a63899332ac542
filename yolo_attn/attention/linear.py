"""Linear (kernelized) attention, "Transformers are RNNs" (Katharopoulos et al., 2020).

The softmax kernel ``exp(q . k)`` is replaced by a positive feature map ``phi(x) = elu(x) + 1``:

    out_i = phi(q_i) (sum_j phi(k_j)^T v_j) / (phi(q_i) . sum_j phi(k_j))

which costs ``O(N d^2)`` instead of ``O(N^2 d)``. There is no attention matrix and therefore no mask: every query
attends every key with the (normalized, positive) kernel weight ``phi(q_i) . phi(k_j) / sum_j' phi(q_i) . phi(k_j')``.

This file also hosts :class:`QKVAttentionBase`, the tiny shared part of the learned-pattern attention modules
(qkv projection, head split/merge, output projection, argument validation).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["QKVAttentionBase", "LinearAttention", "elu_feature_map", "linear_attention"]


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
        """Validate ``x: [B, N, C]`` against ``hw = (H, W)`` (``N = extra_tokens + H * W``) and ``C = dim``."""
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


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """The positive feature map ``phi(x) = elu(x) + 1`` (values in ``(0, inf)``)."""
    return F.elu(x) + 1.0


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Normalized linear attention with ``phi = elu + 1``, ``O(N d^2)``; no mask, no N x N tensor.

    Computed in at least float32 (under autocast the sums over N would otherwise lose precision).

    Args:
        q: Queries ``[B, heads, N, d]``.
        k: Keys ``[B, heads, M, d]``.
        v: Values ``[B, heads, M, dv]``.
        eps: Added to the normalizer ``phi(q_i) . sum_j phi(k_j)`` (which is positive) for numerical safety.

    Returns:
        ``[B, heads, N, dv]`` in the dtype of ``v``.

    Examples:
        >>> q = k = v = torch.randn(2, 4, 35, 16)
        >>> linear_attention(q, k, v).shape
        torch.Size([2, 4, 35, 16])
    """
    dtype = torch.promote_types(v.dtype, torch.float32)
    phi_q, phi_k = elu_feature_map(q.to(dtype)), elu_feature_map(k.to(dtype))
    kv = torch.matmul(phi_k.transpose(-2, -1), v.to(dtype))  # [B, h, d, dv]
    normalizer = torch.matmul(phi_q, phi_k.sum(dim=-2).unsqueeze(-1)) + eps  # [B, h, N, 1]
    return (torch.matmul(phi_q, kv) / normalizer).to(v.dtype)


class LinearAttention(QKVAttentionBase):
    """Multi-head linear attention over ``[B, N, C]`` tokens (global receptive field at ``O(N)`` cost).

    Args:
        dim: Channels ``C``.
        num_heads: Number of heads; must divide ``dim``.
        qkv_bias: Bias in the qkv projection.
        attn_drop: Must be 0.0: linear attention never forms attention weights to drop.
        proj_drop: Dropout after the output projection (training only).
        eps: Normalizer epsilon of :func:`linear_attention`.

    Examples:
        >>> attn = LinearAttention(64, num_heads=4)
        >>> attn(torch.randn(2, 5 * 7, 64), (5, 7)).shape
        torch.Size([2, 35, 64])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        eps: float = 1e-6,
    ) -> None:
        if attn_drop != 0.0:
            raise ValueError(f"{attn_drop=} is not supported by LinearAttention (no attention weights); allowed: 0.0")
        if eps <= 0.0:
            raise ValueError(f"{eps=} must be > 0")
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.eps = eps

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Attend.

        Args:
            x: Tokens ``[B, N, C]``, ``N = H * W`` row-major.
            hw: Feature map size ``(H, W)`` (only validated: linear attention is position-free).

        Returns:
            ``[B, N, C]``.
        """
        self.check_input(x, hw)
        q, k, v = self.split_heads(x)
        return self.merge_heads(linear_attention(q, k, v, self.eps))
