"""Bi-level routing attention (BiFormer, Zhu et al., 2023): route regions to regions, then attend tokens.

The ``H x W`` map is split into ``S x S`` regions (``S = regions``) of ``ceil(H / S) x ceil(W / S)`` tokens; a map not
divisible by ``S`` is padded with zeros at the bottom / right, and padded tokens are masked keys (never attended) and
dropped queries. Then:

1. Region-level queries and keys: the mean ``q`` and ``k`` of each region's real tokens, over all heads together
   (BiFormer's routing runs on the full channel width; one selection is shared by the heads).
2. Region-to-region affinity ``A = q_r k_r^T`` (``[S^2, S^2]``); each region keeps its ``topk`` regions of highest
   affinity. Its own region is always kept (so every query attends at least its own region and itself) and regions
   made only of padding are never preferred over real ones.
3. Token attention: every query of a region attends every real key of its ``topk`` selected regions, gathered into a
   ``[topk * region size]`` key set.

The routing carries no gradient (BiFormer's default: the indices are discrete); the output is exactly dense attention
under the mask the routing chose (:func:`routing_mask`), which :class:`RoutingAttention` can return. The token
attention is one fused ``scaled_dot_product_attention`` over ``[B * heads * S^2, region size, topk * region size]``
(an additive bias masks padded keys; none when ``S`` divides the map). Cost is ``O(N * topk * N / S^2)`` time and
memory; the ``N x N`` matrix is never built. ``S`` and ``topk`` are constants and
region sizes come from the input's shape, so a traced / exported graph runs at any map size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .kernel import batch_rows, mask_to_bias
from .modules import QKVAttentionBase
from .tiling import symbolic_sizes

__all__ = ["RoutingAttention", "check_routing", "example_routing_mask", "region_index", "routing_attention",
           "routing_mask", "routing_select"]


def check_routing(regions: int, topk: int) -> tuple[int, int]:
    """Validate ``(regions, topk)``; errors name the bad value and the allowed range.

    Examples:
        >>> check_routing(8, 4)
        (8, 4)
    """
    if isinstance(regions, bool) or not isinstance(regions, int) or regions < 1:
        raise ValueError(f"regions={regions!r} must be an int >= 1 (the map is split into regions x regions)")
    if isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= regions * regions:
        raise ValueError(f"topk={topk!r} must be an int in [1, {regions * regions}] (regions x regions = "
                         f"{regions}x{regions})")
    return regions, topk


def _region_size(hw, regions: int):
    """``(rh, rw) = (ceil(H / S), ceil(W / S))``: ints, or 0-d tensors while tracing."""
    return tuple((s + regions - 1) // regions for s in hw)


def _divides(hw, regions: int) -> bool:
    """Eager maps divisible by ``S`` need no padding; symbolic (traced) sizes always take the general (padded) path."""
    return all(isinstance(x, int) and x % regions == 0 for x in hw) and not symbolic_sizes()


def _to_regions(x: torch.Tensor, hw, regions: int) -> torch.Tensor:
    """``[B, heads, N, d]`` -> ``[B * heads * S*S, rh*rw, d]`` (zero padded at the bottom / right).

    Heads stay outside the regions, so the gathered key sets are contiguous ``[topk * P, d]`` blocks: no transpose
    of the gathered tensors (they were ONNX Runtime's largest cost of this attention)."""
    b, heads, _, d = x.shape
    (h, w), (rh, rw) = hw, _region_size(hw, regions)
    x = x.reshape(b, heads, h, w, d)
    if not _divides(hw, regions):
        x = F.pad(x, (0, 0, 0, regions * rw - w, 0, regions * rh - h))
    x = x.reshape(b * heads, regions, rh, regions, rw, d).transpose(2, 3)
    return x.reshape(b * heads * regions * regions, rh * rw, d)


def _from_regions(x: torch.Tensor, hw, regions: int, b, heads: int) -> torch.Tensor:
    """Inverse of :func:`_to_regions`: ``[B * heads * S*S, rh*rw, d]`` -> ``[B, heads, N, d]`` (padding cropped).

    Every size is passed or computed explicitly (``b`` from the input): the ONNX exporter would otherwise fix
    inferred sizes of intermediate results as constants."""
    d = x.shape[-1]
    (h, w), (rh, rw) = hw, _region_size(hw, regions)
    x = x.reshape(b * heads, regions, regions, rh, rw, d).transpose(2, 3)
    x = x.reshape(b, heads, regions * rh, regions * rw, d)
    if not _divides(hw, regions):
        x = x.narrow(2, 0, h).narrow(3, 0, w)
    return x.reshape(b, heads, h * w, d)


def _real_tokens(hw, regions: int, device: torch.device) -> torch.Tensor:
    """Bool ``[S*S, rh*rw]``: True for the real (not padding) token slots of each region."""
    (h, w), (rh, rw) = hw, _region_size(hw, regions)
    rows = torch.arange(regions * rh, device=device) < h
    cols = torch.arange(regions * rw, device=device) < w
    real = (rows[:, None] & cols[None, :]).reshape(regions, rh, regions, rw).transpose(1, 2)
    return real.reshape(regions * regions, -1)


def routing_select(q: torch.Tensor, k: torch.Tensor, hw: tuple[int, int], regions: int, topk: int) -> torch.Tensor:
    """The ``topk`` regions each region routes to (BiFormer's region-level routing; no gradient).

    Args:
        q: Queries ``[B, heads, N, d]`` (row-major tokens of the ``H x W`` map).
        k: Keys ``[B, heads, N, d]``.
        hw: Map size ``(H, W)``.
        regions: ``S``: the map is split into ``S x S`` regions.
        topk: Regions kept per region (``1 <= topk <= S*S``).

    Returns:
        Int64 ``[B, S*S, topk]``: region indices (``row * S + col``), own region first, then by falling affinity.

    Examples:
        >>> q = k = torch.randn(1, 2, 8 * 8, 4)
        >>> routing_select(q, k, (8, 8), regions=4, topk=3).shape
        torch.Size([1, 16, 3])
    """
    real = _real_tokens(hw, regions, q.device)
    return _select(_to_regions(q, hw, regions), _to_regions(k, hw, regions), real, topk, q.shape[1])


def _region_means(x: torch.Tensor, r: int, heads: int, count: torch.Tensor) -> torch.Tensor:
    """``[B * heads * R, P, d]`` -> per region the mean over its real tokens, heads together: ``[B, R, heads * d]``."""
    d = x.shape[-1]
    return x.float().sum(1).reshape(-1, heads, r, d).transpose(1, 2).reshape(-1, r, heads * d) / count


@torch.no_grad()
def _select(qr: torch.Tensor, kr: torch.Tensor, real: torch.Tensor, topk: int, heads: int) -> torch.Tensor:
    """:func:`routing_select` on region tensors ``[B * heads * R, P, d]`` (zero padded) and ``real: [R, P]``."""
    r = real.shape[0]
    count = real.sum(-1).clamp(min=1).to(torch.float32)[None, :, None]
    q_mean = _region_means(qr, r, heads, count)  # [B, R, heads * d]
    k_mean = _region_means(kr, r, heads, count)  # (padding slots are zeros)
    affinity = q_mean @ k_mean.transpose(-2, -1)  # [B, R, R]
    big = torch.finfo(affinity.dtype).max
    affinity = affinity.masked_fill(~real.any(-1), -big)  # padding-only regions: last
    region = torch.arange(r, device=qr.device)
    affinity = affinity.masked_fill(region[:, None] == region[None, :], big)  # own region: first
    return affinity.topk(topk, dim=-1).indices


def region_index(hw: tuple[int, int], regions: int, device: torch.device | None = None) -> torch.Tensor:
    """Region of each token ``[N]``: ``(y // rh) * S + x // rw``.

    Examples:
        >>> region_index((4, 4), 2).tolist()
        [0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3]
    """
    (h, w), (rh, rw) = hw, _region_size(hw, regions)
    t = torch.arange(h * w, device=device)
    return (t // w // rh) * regions + (t % w) // rw


def routing_mask(selected: torch.Tensor, hw: tuple[int, int], regions: int) -> torch.Tensor:
    """The mask :func:`routing_attention` uses, densely: key ``j`` allowed for query ``i`` iff ``j``'s region is
    among the regions selected by ``i``'s region (for tests and small maps).

    Args:
        selected: ``[B, S*S, topk]`` from :func:`routing_select`.
        hw: Map size ``(H, W)``.
        regions: ``S``.

    Returns:
        Bool ``[B, N, N]`` (True = may attend); the diagonal is always True.

    Examples:
        >>> routing_mask(torch.tensor([[[0], [1], [2], [3]]]), (4, 4), 2)[0].sum(1).tolist()[:4]
        [4, 4, 4, 4]
    """
    r = regions * regions
    chosen = torch.zeros(selected.shape[0], r, r, dtype=torch.bool, device=selected.device)
    chosen.scatter_(2, selected, True)  # [B, R, R]
    reg = region_index(hw, regions, selected.device)
    return chosen[:, reg][:, :, reg]


def routing_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    hw: tuple[int, int],
    regions: int = 8,
    topk: int = 4,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bi-level routing attention; equals dense attention under ``routing_mask(selected, hw, regions)``.

    Args:
        q: Queries ``[B, heads, N, d]``, ``N = H * W`` row-major.
        k: Keys ``[B, heads, N, d]``.
        v: Values ``[B, heads, N, dv]``.
        hw: Map size ``(H, W)`` (ints, or 0-d tensors while tracing).
        regions: ``S``: ``S x S`` regions.
        topk: Regions attended per region.
        dropout_p: Attention-weight dropout (pass 0.0 in eval).

    Returns:
        ``(out [B, heads, N, dv], selected [B, S*S, topk])``.

    Examples:
        >>> q = k = v = torch.randn(1, 2, 10 * 9, 16)
        >>> routing_attention(q, k, v, (10, 9), regions=3, topk=2)[0].shape
        torch.Size([1, 2, 90, 16])
    """
    b, heads, r = q.shape[0], q.shape[1], regions * regions
    real = _real_tokens(hw, regions, q.device)  # [R, P]
    qr, kr, vr = (_to_regions(t, hw, regions) for t in (q, k, v))  # [B * heads * R, P, d]
    selected = _select(qr, kr, real, topk, heads)  # [B, R, topk]
    flat = batch_rows(selected[:, None].expand(-1, heads, -1, -1), r)  # [B * heads * R * topk]: heads share regions

    def gather(t: torch.Tensor) -> torch.Tensor:  # [B * heads * R, P, d] -> [B * heads * R, topk * P, d]
        return t.index_select(0, flat).reshape(-1, topk * t.shape[1], t.shape[2])

    bias = None
    if not _divides(hw, regions):
        key_ok = real.index_select(0, selected.flatten()).reshape(b, 1, r, 1, topk * real.shape[1])
        key_ok = key_ok.expand(-1, heads, -1, -1, -1).reshape(-1, 1, topk * real.shape[1])  # [B * heads * R, 1, keys]
        bias = mask_to_bias(key_ok, q.dtype)  # finite: a padding-only region's rows stay finite (and are dropped)
    out = F.scaled_dot_product_attention(qr, gather(kr), gather(vr), attn_mask=bias, dropout_p=dropout_p)
    return _from_regions(out, hw, regions, b, heads), selected


def example_routing_mask(h: int, w: int, regions: int = 4, topk: int = 4, seed: int = 0) -> torch.Tensor:
    """A routing mask on random features (for pictures: a trained layer routes by content).

    Args:
        h: Map height.
        w: Map width.
        regions: ``S``.
        topk: Regions kept per region.
        seed: Seed of the random queries / keys.

    Returns:
        Bool ``[h*w, h*w]``.

    Examples:
        >>> example_routing_mask(8, 8, regions=4, topk=2).sum(1).unique().tolist()
        [8]
    """
    check_routing(regions, topk)
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(1, 1, h * w, 8, generator=gen) for _ in range(2))
    return routing_mask(routing_select(q, k, (h, w), regions, topk), (h, w), regions)[0]


class RoutingAttention(QKVAttentionBase):
    """Multi-head bi-level routing attention (BiFormer) over ``[B, N, C]`` tokens of an ``H x W`` map.

    Args:
        dim: Channels ``C``.
        num_heads: Number of heads; must divide ``dim``.
        qkv_bias: Bias in the qkv projection.
        attn_drop: Attention-weight dropout (training only).
        proj_drop: Output dropout (training only).
        regions: ``S``: the map is split into ``S x S`` regions (padded when ``S`` does not divide it).
        topk: Regions each region attends (``1 <= topk <= S*S``; ``S*S`` = full attention).

    Examples:
        >>> attn = RoutingAttention(64, num_heads=2, regions=4, topk=4)
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
        regions: int = 8,
        topk: int = 4,
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.regions, self.topk = check_routing(regions, topk)

    def forward(
        self, x: torch.Tensor, hw: tuple[int, int], return_mask: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend.

        Args:
            x: Tokens ``[B, N, C]``, ``N = H * W`` row-major.
            hw: Feature map size ``(H, W)``.
            return_mask: Also return the mask actually used, bool ``[B, heads, N, N]`` (tests / small maps only).

        Returns:
            ``[B, N, C]``, or ``(out, mask)`` when ``return_mask``.
        """
        self.check_input(x, hw)
        q, k, v = self.split_heads(x)
        out, selected = routing_attention(q, k, v, hw, self.regions, self.topk, self.dropout_p)
        out = self.merge_heads(out)
        if not return_mask:
            return out
        return out, routing_mask(selected, hw, self.regions)[:, None].expand(-1, self.num_heads, -1, -1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, regions={self.regions}, topk={self.topk}"
