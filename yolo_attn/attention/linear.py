"""Linear (kernelized) attention, "Transformers are RNNs" (Katharopoulos et al., 2020).

The softmax kernel ``exp(q . k)`` is replaced by a positive feature map ``phi(x) = elu(x) + 1``:

    out_i = phi(q_i) (sum_j phi(k_j)^T v_j) / (phi(q_i) . sum_j phi(k_j))

which costs ``O(N d^2)`` instead of ``O(N^2 d)``. There is no attention matrix and therefore no mask: every query
attends every key with the (normalized, positive) kernel weight ``phi(q_i) . phi(k_j) / sum_j' phi(q_i) . phi(k_j')``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .modules import QKVAttentionBase

__all__ = ["LinearAttention", "elu_feature_map", "linear_attention"]


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
