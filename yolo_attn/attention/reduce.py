"""Spatial-reduction attention (PVT, Wang et al. 2021; PVTv2's pooled variant): fewer keys, not a sparser mask.

Every query attends every key of a *reduced* map: the ``H x W`` tokens are reduced by ``ratio = r`` per axis to
``ceil(H / r) x ceil(W / r)`` cells before the key/value projection, so attention costs ``O(N * N / r^2)`` time and
memory (the lectures' "do we need all N keys?"). Two reducers:

* ``"conv"`` (PVT's SRA): a convolution with kernel = stride = ``r`` (``dim -> dim``), then LayerNorm.
* ``"pool"`` (PVTv2's linear SRA, Linformer-like fixed averaging): the mean of each ``r x r`` cell, then LayerNorm;
  no weights besides the norm.

Maps not divisible by ``r`` are padded with zeros at the bottom / right to ``r * ceil(H / r)`` (ceil, never
cropping): the conv's edge cells see those zeros as a zero-padded convolution would; the pool averages only the real
pixels of an edge cell. ``ratio=1`` reduces nothing (no conv, no norm): full attention. The padding amount is a
constant ``r - 1`` (the conv / pool then yields exactly the ceil), so nothing derived from the map size is baked
into a traced graph: it exports for any input size.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .modules import QKVAttentionBase

__all__ = ["REDUCERS", "ReduceAttention", "reduce_attention", "reduce_map", "reduced_size"]

REDUCERS = ("conv", "pool")


def reduced_size(hw: tuple[int, int], ratio: int) -> tuple[int, int]:
    """Reduced map size ``(ceil(H / r), ceil(W / r))``.

    Examples:
        >>> reduced_size((80, 78), 4)
        (20, 20)
    """
    return tuple((s + ratio - 1) // ratio for s in hw)


def reduce_map(
    x: torch.Tensor, ratio: int, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Reduce a map ``[B, C, H, W]`` by ``ratio`` per axis (ceil): a strided conv, or the mean of each cell.

    Args:
        x: Feature map ``[B, C, H, W]``.
        ratio: Reduction ``r`` per axis (kernel = stride = ``r``).
        weight: Conv weight ``[C_out, C, r, r]``; None for the average (over each cell's real pixels).
        bias: Conv bias ``[C_out]`` or None.

    Returns:
        ``[B, C_out, ceil(H / r), ceil(W / r)]``.

    Examples:
        >>> reduce_map(torch.ones(1, 3, 5, 7), 2)[0, 0]
        tensor([[1., 1., 1., 1.],
                [1., 1., 1., 1.],
                [1., 1., 1., 1.]])
    """
    if ratio == 1 and weight is None:
        return x
    pad = (0, ratio - 1, 0, ratio - 1)  # constant padding: the strided window count is then ceil(H / r)
    if weight is not None:
        return F.conv2d(F.pad(x, pad), weight, bias, stride=ratio)
    real = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), pad), ratio)  # fraction of real pixels per cell
    return F.avg_pool2d(F.pad(x, pad), ratio) / real


def _to_map(t: torch.Tensor, hw) -> torch.Tensor:
    """``[B, heads, N, d]`` -> ``[B * heads, d, H, W]``."""
    b, heads, _, d = t.shape
    return t.transpose(-2, -1).reshape(b * heads, d, hw[0], hw[1])


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
    b, heads = q.shape[:2]
    kr, vr = (reduce_map(_to_map(t, hw), ratio).flatten(2).reshape(b, heads, t.shape[-1], -1).transpose(-2, -1)
              for t in (k, v))
    return F.scaled_dot_product_attention(q, kr, vr, dropout_p=dropout_p)


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

    exports_any_size = True  # the padding is a constant r - 1; sizes come from the input

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
        b, _, c = x.shape
        weight, bias = (self.sr.weight, self.sr.bias) if self.sr is not None else (None, None)
        reduced = reduce_map(x.transpose(1, 2).reshape(b, c, hw[0], hw[1]), self.ratio, weight, bias)
        return self.norm(reduced.flatten(2).transpose(1, 2))

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
