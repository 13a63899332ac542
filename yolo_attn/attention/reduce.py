"""Spatial-reduction attention (PVT, Wang et al. 2021; PVTv2's pooled variant): fewer keys, not a sparser mask.

Every query attends every key of a *reduced* map: the ``H x W`` tokens are reduced by ``ratio = r`` per axis to
``ceil(H / r) x ceil(W / r)`` cells before the key/value projection, so attention costs ``O(N * N / r^2)`` time and
memory (the lectures' "do we need all N keys?"). Two reducers:

* ``"conv"`` (PVT's SRA): a convolution with kernel = stride = ``r`` (``dim -> dim``), then LayerNorm.
* ``"pool"`` (PVTv2's linear SRA, Linformer-like fixed averaging): the mean of each ``r x r`` cell, then LayerNorm;
  no weights besides the norm.

Maps not divisible by ``r`` are padded with zeros at the bottom / right to ``r * ceil(H / r)`` (ceil, never
cropping): the conv's edge cells see those zeros as a zero-padded convolution would; the pool averages only the real
pixels of an edge cell. ``ratio=1`` reduces nothing (no conv, no norm): full attention.

The reduction works on the token layout: the map ``[B, H, W, C]`` is cut into cells ``[B, H', r, W', r, C]`` by a
reshape; the conv is then one linear map of each cell's ``r * r * C`` values (the conv weight, reordered) and the pool
a sum divided by the cell's count of real pixels. Padding amounts and cell counts are tensor expressions of the
input's size, so a traced / exported graph runs at any map size. Attention itself is one fused
``scaled_dot_product_attention`` (no mask: every reduced key is real).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .modules import QKVAttentionBase
from .tiling import symbolic_sizes

__all__ = ["REDUCERS", "ReduceAttention", "reduce_attention", "reduce_tokens", "reduced_size"]

REDUCERS = ("conv", "pool")


def reduced_size(hw: tuple[int, int], ratio: int) -> tuple[int, int]:
    """Reduced map size ``(ceil(H / r), ceil(W / r))``.

    Examples:
        >>> reduced_size((80, 78), 4)
        (20, 20)
    """
    return tuple((s + ratio - 1) // ratio for s in hw)


def _divides(hw, ratio: int) -> bool:
    """Eager maps divisible by ``ratio`` skip the padding; symbolic (traced) sizes always take the general path."""
    return all(isinstance(x, int) and x % ratio == 0 for x in hw) and not symbolic_sizes()


def reduce_tokens(
    x: torch.Tensor, hw: tuple[int, int], ratio: int, weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reduce the tokens of an ``H x W`` map by ``ratio`` per axis (ceil): a strided conv, or the mean of each cell.

    Args:
        x: Tokens ``[B, N, C]``, ``N = H * W`` row-major.
        hw: Map size ``(H, W)`` (ints, or 0-d tensors while tracing).
        ratio: Reduction ``r`` per axis (kernel = stride = ``r``).
        weight: Conv weight ``[C_out, C, r, r]`` (``nn.Conv2d`` layout); None for the mean over each cell's real pixels.
        bias: Conv bias ``[C_out]`` or None.

    Returns:
        ``[B, M, C_out]`` in row-major cell order, ``M = ceil(H / r) * ceil(W / r)``.

    Examples:
        >>> reduce_tokens(torch.ones(1, 5 * 7, 3), (5, 7), 2).shape
        torch.Size([1, 12, 3])
    """
    if ratio == 1 and weight is None:
        return x
    (b, _, c), (h, w), (hr, wr) = x.shape, hw, reduced_size(hw, ratio)
    x = x.reshape(b, h, w, c)
    if not _divides(hw, ratio):
        x = F.pad(x, (0, 0, 0, wr * ratio - w, 0, hr * ratio - h))
    cells = x.reshape(b, hr, ratio, wr, ratio, c)
    if weight is not None:  # kernel = stride = r: one linear map of each cell's (ky, kx, c) values
        patches = cells.permute(0, 1, 3, 2, 4, 5).reshape(b, hr * wr, ratio * ratio * c)
        return F.linear(patches, weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1), bias)
    sums = cells.sum((2, 4))  # [B, H', W', C]
    if not _divides(hw, ratio):
        start = torch.arange(hr, device=x.device) * ratio, torch.arange(wr, device=x.device) * ratio
        rows, cols = ((s + ratio).clamp(max=n) - s for s, n in zip(start, (h, w)))  # real pixels per cell and axis
        sums = sums / (rows[:, None] * cols[None, :]).to(sums.dtype)[..., None]
    else:
        sums = sums / (ratio * ratio)
    return sums.reshape(b, hr * wr, c)


def reduce_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: tuple[int, int], ratio: int = 4, dropout_p: float = 0.0
) -> torch.Tensor:
    """Attention of every query over keys / values averaged over ``ratio x ratio`` cells (the ``"pool"`` reducer
    applied to ``k, v`` directly, without projections or norm): ``O(N * N / r^2)``.

    Args:
        q: Queries ``[B, heads, N, d]``, ``N = H * W`` row-major.
        k: Keys ``[B, heads, N, d]``.
        v: Values ``[B, heads, N, dv]``.
        hw: Map size ``(H, W)`` (ints, or 0-d tensors while tracing).
        ratio: Reduction per axis.
        dropout_p: Attention-weight dropout (pass 0.0 in eval).

    Returns:
        ``[B, heads, N, dv]``.

    Examples:
        >>> q = k = v = torch.randn(1, 2, 20 * 18, 16)
        >>> reduce_attention(q, k, v, (20, 18), ratio=4).shape
        torch.Size([1, 2, 360, 16])
    """
    b, heads, n = q.shape[:3]
    kr, vr = (reduce_tokens(t.reshape(b * heads, n, t.shape[-1]), hw, ratio) for t in (k, v))
    m = kr.shape[1]
    return F.scaled_dot_product_attention(q, kr.reshape(b, heads, m, -1), vr.reshape(b, heads, m, -1),
                                          dropout_p=dropout_p)


class ReduceAttention(QKVAttentionBase):
    """Multi-head spatial-reduction attention over ``[B, N, C]`` tokens (PVT's SRA, or PVTv2's pooled variant).

    Queries come from every token; keys and values from the tokens reduced by ``ratio`` (see the module doc), with
    the same ``qkv`` projection weights as the other modules (rows ``[:dim]`` for q, ``[dim:]`` for k, v).

    Args:
        dim: Channels ``C``.
        num_heads: Number of heads; must divide ``dim``.
        qkv_bias: Bias in the qkv projection.
        attn_drop: Attention-weight dropout (training only).
        proj_drop: Output dropout (training only).
        ratio: Spatial reduction ``r`` per axis (>= 1; 1 = full attention).
        reducer: One of :data:`REDUCERS`: ``"conv"`` (strided conv + LayerNorm) or ``"pool"`` (cell mean + LayerNorm).

    Examples:
        >>> attn = ReduceAttention(64, num_heads=2, ratio=4)
        >>> attn(torch.randn(2, 20 * 18, 64), (20, 18)).shape
        torch.Size([2, 360, 64])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        ratio: int = 4,
        reducer: str = "conv",
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1:
            raise ValueError(f"ratio={ratio!r} must be an int >= 1 (keys and values reduced by ratio x ratio)")
        if reducer not in REDUCERS:
            raise ValueError(f"reducer={reducer!r} is not one of {', '.join(REDUCERS)}")
        self.ratio, self.reducer = ratio, reducer
        self.sr = nn.Conv2d(dim, dim, ratio, ratio) if ratio > 1 and reducer == "conv" else None
        self.norm = nn.LayerNorm(dim) if ratio > 1 else nn.Identity()

    def reduce(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Reduced, normalised tokens ``[B, M, C]`` (``M = ceil(H / r) * ceil(W / r)``) of ``x: [B, N, C]``."""
        weight, bias = (self.sr.weight, self.sr.bias) if self.sr is not None else (None, None)
        return self.norm(reduce_tokens(x, hw, self.ratio, weight, bias))

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Attend.

        Args:
            x: Tokens ``[B, N, C]``, ``N = H * W`` row-major.
            hw: Feature map size ``(H, W)``.

        Returns:
            ``[B, N, C]``.
        """
        self.check_input(x, hw)
        b, n, c = x.shape
        w_q, w_kv = self.qkv.weight.split([c, 2 * c])
        b_q, b_kv = self.qkv.bias.split([c, 2 * c]) if self.qkv.bias is not None else (None, None)
        q = F.linear(x, w_q, b_q).reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        kv = F.linear(self.reduce(x, hw), w_kv, b_kv)
        k, v = kv.reshape(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout_p)
        return self.merge_heads(out)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, ratio={self.ratio}, reducer={self.reducer!r}"
