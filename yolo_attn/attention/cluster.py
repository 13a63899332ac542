"""Clustering attention: queries attend only keys routed to the same cluster (Routing Transformer / Reformer).

Routing: every token gets one *routing vector* per head, ``r = normalize(q) + normalize(k)``, shared by its query
and its key, so a token's query and key always land in the same cluster and every query attends at least itself.
Two routers map ``r`` to a cluster id:

- ``"kmeans"`` (Routing Transformer): nearest of ``num_clusters`` unit centroids ``[heads, num_clusters, d]``
  (cosine similarity). The centroids are a buffer updated by an exponential moving average of the assigned
  (normalized) routing vectors, under ``no_grad``, in training only -- the one documented attribute update in
  ``forward``. Initialization is deterministic under ``seed``.
- ``"lsh"`` (Reformer): angular LSH with a fixed random rotation ``R [heads, d, num_clusters // 2]`` drawn from
  ``seed``; ``bucket = argmax([rR, -rR])``.

Efficient path (``O(N c)`` memory and time, never an ``N x N`` tensor): per (batch, head), tokens are sorted by
cluster id (ties by position), split into chunks of ``c = ceil(N / num_clusters)`` (the tail padded), and each query
attends the keys of its chunk that share its cluster. The pattern *actually used* is therefore
``same cluster AND same chunk`` (a large cluster is split across chunks); :func:`cluster_mask` returns it densely.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

from .kernel import batch_rows, masked_attention
from .modules import QKVAttentionBase

__all__ = ["ClusterAttention", "cluster_attention", "cluster_mask", "kmeans_route", "lsh_route", "ROUTERS"]

ROUTERS = ("kmeans", "lsh")


def routing_vectors(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Shared routing vector ``normalize(q) + normalize(k)`` per token, ``[B, heads, N, d]`` (no gradient).

    Kept in the dtype of ``q``: a half model routes in half precision (no float32 round trip on the hot path).
    """
    return F.normalize(q.detach(), dim=-1) + F.normalize(k.detach(), dim=-1)


def kmeans_route(r: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Cluster ids ``[B, heads, N]`` (int64): the centroid ``[heads, K, d]`` of highest cosine similarity to ``r``."""
    return torch.einsum("bhnd,hkd->bhnk", F.normalize(r, dim=-1), F.normalize(centroids.to(r.dtype), dim=-1)).argmax(-1)


def lsh_route(r: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Bucket ids ``[B, heads, N]``: ``argmax([rR, -rR])`` with ``rotations: [heads, d, K // 2]`` (K buckets)."""
    proj = torch.einsum("bhnd,hdk->bhnk", r, rotations.to(r.dtype))
    return torch.cat([proj, -proj], dim=-1).argmax(-1)


def _chunk_layout(cluster_ids: torch.Tensor, num_clusters: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Sort order ``perm`` (position of the t-th sorted token), inverse ``rank`` and chunk size ``c``."""
    n = cluster_ids.shape[-1]  # a 0-d tensor when traced: the chunk size below is then computed in the graph
    pos = torch.arange(n, device=cluster_ids.device)
    # unique float keys (exact below 2**24) so the order is deterministic and the sort exports as ONNX TopK
    perm = torch.argsort((cluster_ids * n + pos).float(), dim=-1)
    rank = torch.zeros_like(perm).scatter(-1, perm, pos.expand_as(perm))
    return perm, rank, (n + num_clusters - 1) // num_clusters


def cluster_mask(cluster_ids: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """The mask :func:`cluster_attention` uses, densely: same cluster AND same chunk after sorting.

    Args:
        cluster_ids: ``[B, heads, N]`` int cluster ids in ``[0, num_clusters)``.
        num_clusters: Number of clusters ``K`` (fixes the chunk size ``ceil(N / K)``).

    Returns:
        Bool ``[B, heads, N, N]`` (True = may attend); the diagonal is always True.

    Examples:
        >>> cluster_mask(torch.tensor([[[0, 1, 0, 1]]]), 2)[0, 0].int().tolist()
        [[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]]
    """
    _, rank, c = _chunk_layout(cluster_ids, num_clusters)
    chunk = rank // c
    return (cluster_ids[..., :, None] == cluster_ids[..., None, :]) & (chunk[..., :, None] == chunk[..., None, :])


def cluster_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cluster_ids: torch.Tensor,
    num_clusters: int,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Attention within (cluster, chunk) groups in ``O(N c)``; equals dense attention under :func:`cluster_mask`.

    Args:
        q: Queries ``[B, heads, N, d]``.
        k: Keys ``[B, heads, N, d]``.
        v: Values ``[B, heads, N, dv]``.
        cluster_ids: ``[B, heads, N]`` int ids in ``[0, num_clusters)``, shared by a token's query and key.
        num_clusters: Number of clusters ``K``; chunk size ``c = ceil(N / K)``; ``N`` is padded to a multiple of ``c``
            (padding slots get cluster id -1, so they never mix with real tokens).
        scale: Logit scale (default ``d ** -0.5``).
        dropout_p: Attention-weight dropout (pass 0.0 in eval).

    Returns:
        ``[B, heads, N, dv]``.

    Examples:
        >>> q = k = v = torch.randn(2, 4, 35, 16)
        >>> ids = torch.randint(0, 4, (2, 4, 35))
        >>> cluster_attention(q, k, v, ids, 4).shape
        torch.Size([2, 4, 35, 16])
    """
    b, h, n, _ = q.shape
    perm, rank, c = _chunk_layout(cluster_ids, num_clusters)
    pad = -n % c

    def rows(t: torch.Tensor, order: torch.Tensor) -> torch.Tensor:  # t[b, h, order[b, h, i]] for t [B, h, N, d]
        return t.reshape(-1, t.shape[-1]).index_select(0, batch_rows(order, n)).reshape(b, h, -1, t.shape[-1])

    def to_chunks(t: torch.Tensor, fill: float) -> torch.Tensor:
        t = t.gather(2, perm) if t.dim() == 3 else rows(t, perm)
        t = F.pad(t, (0, pad) if t.dim() == 3 else (0, 0, 0, pad), value=fill)
        return t.reshape(b, h, (n + pad) // c, c, *t.shape[3:])

    ids = to_chunks(cluster_ids, -1)
    mask = ids.unsqueeze(-1) == ids.unsqueeze(-2)  # [B, h, n_chunks, c, c]
    out = masked_attention(to_chunks(q, 0.0), to_chunks(k, 0.0), to_chunks(v, 0.0), mask, None, scale, dropout_p)
    out = out.reshape(b, h, n + pad, -1)[:, :, :n]
    return rows(out, rank)


class ClusterAttention(QKVAttentionBase):
    """Multi-head clustering attention over ``[B, N, C]`` tokens (k-means routing or LSH buckets).

    Args:
        dim: Channels ``C``.
        num_heads: Number of heads; must divide ``dim``.
        qkv_bias: Bias in the qkv projection.
        attn_drop: Attention-weight dropout (training only).
        proj_drop: Output dropout (training only).
        num_clusters: Clusters / buckets ``K`` (even for ``"lsh"``); chunk size is ``ceil(N / K)``.
        router: One of :data:`ROUTERS`.
        ema_decay: k-means centroid EMA decay in ``[0, 1)`` (ignored by ``"lsh"``).
        seed: Seed of the centroid initialization / LSH rotations.

    Examples:
        >>> attn = ClusterAttention(64, num_heads=4, num_clusters=4)
        >>> attn(torch.randn(2, 8 * 8, 64), (8, 8)).shape
        torch.Size([2, 64, 64])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        num_clusters: int = 8,
        router: str = "kmeans",
        ema_decay: float = 0.999,
        seed: int = 0,
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        if router not in ROUTERS:
            raise ValueError(f"{router=} is not a known router; allowed: {ROUTERS}")
        if num_clusters < 1 or (router == "lsh" and num_clusters % 2):
            raise ValueError(f"{num_clusters=} must be a positive integer (and even for router='lsh')")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"{ema_decay=} must be in [0, 1)")
        self.num_clusters, self.router, self.ema_decay = num_clusters, router, ema_decay
        gen = torch.Generator().manual_seed(seed)
        if router == "kmeans":
            init = F.normalize(torch.randn(num_heads, num_clusters, self.head_dim, generator=gen), dim=-1)
            self.register_buffer("centroids", init)
        else:
            self.register_buffer("rotations", torch.randn(num_heads, self.head_dim, num_clusters // 2, generator=gen))

    def route(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Cluster ids ``[B, heads, N]`` of the tokens given their ``q, k: [B, heads, N, d]`` (no side effects)."""
        r = routing_vectors(q, k)
        return kmeans_route(r, self.centroids) if self.router == "kmeans" else lsh_route(r, self.rotations)

    @torch.no_grad()
    def _update_centroids(self, q: torch.Tensor, k: torch.Tensor, cluster_ids: torch.Tensor) -> None:
        """EMA step: ``c <- normalize(decay * c + (1 - decay) * mean of assigned routing vectors)`` (non-empty only)."""
        r = F.normalize(routing_vectors(q, k).to(self.centroids.dtype), dim=-1)  # EMA in the buffer's dtype
        onehot = F.one_hot(cluster_ids, self.num_clusters).to(r.dtype)  # [B, h, N, K]
        sums = torch.einsum("bhnk,bhnd->hkd", onehot, r)
        counts = onehot.sum(dim=(0, 2)).unsqueeze(-1)  # [h, K, 1]
        means = sums / counts.clamp(min=1.0)
        mixed = self.ema_decay * self.centroids + (1.0 - self.ema_decay) * means
        self.centroids.copy_(torch.where(counts > 0, F.normalize(mixed, dim=-1), self.centroids))

    def forward(
        self, x: torch.Tensor, hw: tuple[int, int], return_mask: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend within clusters; in training with ``router="kmeans"`` also updates ``centroids`` (EMA, no grad).

        Args:
            x: Tokens ``[B, N, C]``, ``N = H * W`` row-major.
            hw: Feature map size ``(H, W)``.
            return_mask: Also return the mask actually used, bool ``[B, heads, N, N]`` (tests / small maps only).

        Returns:
            ``[B, N, C]``, or ``(out, mask)`` when ``return_mask``.
        """
        self.check_input(x, hw)
        q, k, v = self.split_heads(x)
        ids = self.route(q, k)
        out = cluster_attention(q, k, v, ids, self.num_clusters, self.scale, self.dropout_p)
        if self.training and self.router == "kmeans":
            self._update_centroids(q, k, ids)
        out = self.merge_heads(out)
        return (out, cluster_mask(ids, self.num_clusters)) if return_mask else out
