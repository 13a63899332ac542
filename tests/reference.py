"""Independent references for the attention tests: dense float64 attention, naive masks, naive routing decisions.

Written without any library code (nothing here imports ``yolo_attn``), from the definitions in the lectures and in
the module docstring of ``yolo_attn/attention/patterns.py``, and in a different way from the library: per-position
Python loops that list each query's keys (a window is centred on its query and *moved* back inside the map, where
the library clamps a start index), explicit window ranges for Swin, explicit step lists for the 1-D bands. Learned
patterns (k-means / LSH routing, the sort-and-chunk layout, the centroid EMA, Sinkhorn normalisation and block
choice) are recomputed with loops or a different formula. Tests compare the library's fast paths with
:func:`reference_attention` under *these* masks, never under a mask the library reports about itself.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                        bias: torch.Tensor | None = None) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d) + bias, masked) v`` in float64. q/k/v ``[..., N, d]``; mask True = may attend."""
    q, k, v = (t.to(torch.float64) for t in (q, k, v))
    logits = torch.einsum("...id,...jd->...ij", q, k) / math.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + bias.to(torch.float64)
    if mask is not None:
        logits = torch.where(mask, logits, torch.full_like(logits, -math.inf))
    weights = torch.exp(logits - logits.amax(-1, keepdim=True))
    return torch.einsum("...ij,...jd->...id", weights / weights.sum(-1, keepdim=True), v)


# ------------------------------------------------------------------------------------------------ per-axis key lists
@functools.lru_cache(maxsize=None)
def neighbours_1d(length: int, window: int, dilation: int = 1) -> tuple[tuple[int, ...], ...]:
    """Keys of every query position along one axis for the (dilated) neighbourhood.

    From the definition: a query sees the positions of its own residue class (``p % dilation``); walking that class as
    a list, its window holds ``window`` members (all of them if the class is shorter), centred on the query (``k // 2``
    before it, the rest after), and a window that sticks out of the class is *moved* back inside it, one step at a
    time.
    """
    out = []
    for centre in range(length):
        members = [p for p in range(length) if p % dilation == centre % dilation]
        k = min(window, len(members))
        first = members.index(centre) - k // 2
        while first < 0:
            first += 1
        while first + k > len(members):
            first -= 1
        out.append(tuple(members[first:first + k]))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def windows_1d(length: int, window: int, shift: int = 0) -> tuple[tuple[int, ...], ...]:
    """Keys of every position along one axis for Swin windows: explicit ranges starting at ``-shift``.

    The window is clamped to the axis, and an axis covered by one window is not shifted (Swin's rule).
    """
    ws = min(window, length)
    s = 0 if ws == length else shift % ws
    ranges, start = [], -s
    while start < length:
        ranges.append(tuple(p for p in range(start, start + ws) if 0 <= p < length))
        start += ws
    return tuple(next(r for r in ranges if p in r) for p in range(length))


def _separable(h: int, w: int, rows, cols) -> torch.Tensor:
    """2-D mask from per-axis key lists: query ``(y, x)`` sees ``(ky, kx)`` for ``ky in rows[y]``, ``kx in cols[x]``."""
    mask = torch.zeros(h * w, h * w, dtype=torch.bool)
    for y in range(h):
        for x in range(w):
            keys = [ky * w + kx for ky in rows[y] for kx in cols[x]]
            mask[y * w + x, keys] = True
    return mask


# --------------------------------------------------------------------------------------------------------- patterns
@functools.lru_cache(maxsize=None)
def naive_local(h: int, w: int, window: int, dilation: int = 1) -> torch.Tensor:
    """Naive 2-D (dilated) neighbourhood mask (``local`` is ``dilation = 1``)."""
    return _separable(h, w, neighbours_1d(h, window, dilation), neighbours_1d(w, window, dilation))


@functools.lru_cache(maxsize=None)
def naive_window(h: int, w: int, window: int, shift: int = 0) -> torch.Tensor:
    """Naive (shifted) Swin window mask."""
    return _separable(h, w, windows_1d(h, window, shift), windows_1d(w, window, shift))


@functools.lru_cache(maxsize=None)
def naive_band(h: int, w: int, window: int, dilation: int = 1) -> torch.Tensor:
    """Naive lecture 1-D (strided) band over the flattened sequence: keys ``i + s * dilation``, ``|s| <= window``."""
    n = h * w
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        mask[i, [i + s * dilation for s in range(-window, window + 1) if 0 <= i + s * dilation < n]] = True
    return mask


@functools.lru_cache(maxsize=None)
def naive_axial(h: int, w: int) -> torch.Tensor:
    """Naive axial mask: the query's row and its column."""
    mask = torch.zeros(h * w, h * w, dtype=torch.bool)
    for y in range(h):
        for x in range(w):
            mask[y * w + x, [y * w + c for c in range(w)] + [r * w + x for r in range(h)]] = True
    return mask


def naive_global(base: torch.Tensor, global_idx, num_global_tokens: int = 0) -> torch.Tensor:
    """Naive global mask: ``G`` leading tokens and the designated spatial tokens see all and are seen by all."""
    g, n = num_global_tokens, base.shape[0]
    mask = torch.zeros(g + n, g + n, dtype=torch.bool)
    mask[g:, g:] = base
    for t in list(range(g)) + [g + int(i) for i in global_idx]:
        mask[t, :] = True
        mask[:, t] = True
    return mask


#: Options each pattern takes, with their documented defaults (``functional.PATTERNS``, written down again here).
DEFAULTS: dict[str, dict[str, Any]] = {
    "full": {},
    "local": {"window": 7},
    "dilated": {"window": 7, "dilation": 2},
    "local1d": {"window": 3},
    "dilated1d": {"window": 3, "dilation": 2},
    "window": {"window": 7, "shift": False},
    "axial": {},
    "global": {"base": "local", "global_idx": (), "num_global_tokens": 0},
}
ALIASES = {"stride": "dilated", "stride1d": "dilated1d"}
OPTION_ALIASES = {"stride": "dilation", "window_size": "window"}


def _options(pattern: str, options: dict[str, Any]) -> dict[str, Any]:
    opts = {**DEFAULTS[pattern], **{OPTION_ALIASES.get(k, k): v for k, v in options.items()}}
    if opts.get("shift") is True:
        opts["shift"] = opts["window"] // 2
    elif "shift" in opts:
        opts["shift"] = int(opts["shift"])
    return opts


def naive_mask(pattern: str, hw: tuple[int, int], **options: Any) -> torch.Tensor:
    """Naive specification mask of any mask-defined pattern, with the documented option defaults.

    Returns ``[N, N]``, ``[G + N, G + N]`` for ``global`` with ``num_global_tokens = G`` and ``[heads, N, N]`` for
    ``mixed`` (``heads`` in order, shared options given to each pattern that takes them, ``options[name]`` winning).
    """
    pattern = ALIASES.get(pattern, pattern)
    h, w = hw
    if pattern == "mixed":
        per = options.get("options") or {}
        shared = {OPTION_ALIASES.get(k, k): v for k, v in options.items() if k not in ("heads", "options")}
        masks = []
        for name, count in options["heads"].items():
            own = {k: v for k, v in shared.items() if k in _accepted(name)}
            masks += [naive_mask(name, hw, **{**own, **per.get(name, {})})] * count
        return torch.stack(masks)
    if pattern == "custom":
        mask = options["mask"]
        return mask(h, w) if callable(mask) else mask
    o = _options(pattern, options)
    if pattern == "full":
        return torch.ones(h * w, h * w, dtype=torch.bool)
    if pattern in ("local", "dilated"):
        return naive_local(h, w, o["window"], o.get("dilation", 1))
    if pattern in ("local1d", "dilated1d"):
        return naive_band(h, w, o["window"], o.get("dilation", 1))
    if pattern == "window":
        return naive_window(h, w, o["window"], o["shift"])
    if pattern == "axial":
        return naive_axial(h, w)
    if pattern == "global":
        base_opts = {k: v for k, v in o.items() if k not in DEFAULTS["global"]}
        return naive_global(naive_mask(o["base"], hw, **base_opts), o["global_idx"], o["num_global_tokens"])
    raise KeyError(pattern)


def _accepted(name: str) -> set[str]:
    name = ALIASES.get(name, name)
    if name == "global":  # its own options and those of its default base, local
        return set(DEFAULTS["global"]) | set(DEFAULTS["local"])
    return set(DEFAULTS[name])


# --------------------------------------------------------------------------------------------- relative position bias
@functools.lru_cache(maxsize=None)
def _rel_offsets(h: int, w: int, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows, cols = [], []
    for i in range(h * w):
        rows.append([min(max(i // w - j // w, 1 - a), a - 1) + a - 1 for j in range(h * w)])
        cols.append([min(max(i % w - j % w, 1 - b), b - 1) + b - 1 for j in range(h * w)])
    return torch.tensor(rows), torch.tensor(cols)


def naive_rel_bias(table: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Relative position bias ``[heads, N, N]``: offsets by loops (clipped to the table), then one lookup."""
    iy, ix = _rel_offsets(h, w, (table.shape[1] + 1) // 2, (table.shape[2] + 1) // 2)
    return table[:, iy, ix]


# ------------------------------------------------------------------------------------------------- learned patterns
def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def naive_routing_vectors(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``q / |q| + k / |k|`` per token, float64 (the routing vector shared by a token's query and key)."""
    return _unit(q.detach().double()) + _unit(k.detach().double())


def naive_kmeans_ids(r: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Nearest centroid by *Euclidean distance* between unit vectors (equivalent to the highest cosine similarity).

    r ``[B, heads, N, d]``, centroids ``[heads, K, d]`` -> ``[B, heads, N]``, with loops over tokens.
    """
    b, heads, n, _ = r.shape
    ru, cu = _unit(r.double()), _unit(centroids.double())
    ids = torch.empty(b, heads, n, dtype=torch.long)
    for bi in range(b):
        for hi in range(heads):
            dist = ((ru[bi, hi, :, None, :] - cu[hi, None, :, :]) ** 2).sum(-1)  # [N, K]
            for t in range(n):
                ids[bi, hi, t] = min(range(cu.shape[1]), key=lambda c: float(dist[t, c]))
    return ids


def naive_lsh_ids(r: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Angular LSH bucket with a different formula: the rotated coordinate of largest magnitude, ``j`` if it is
    positive and ``j + K/2`` if negative (the same as ``argmax([rR, -rR])``). -> ``[B, heads, N]``."""
    proj = torch.einsum("bhnd,hdk->bhnk", r.double(), rotations.double())
    half = proj.shape[-1]
    ids = torch.empty(proj.shape[:3], dtype=torch.long)
    for idx in torch.cartesian_prod(*(torch.arange(s) for s in proj.shape[:3])).tolist():
        p = proj[tuple(idx)].tolist()
        j = max(range(half), key=lambda c: abs(p[c]))
        ids[tuple(idx)] = j if p[j] > 0 else j + half
    return ids


def naive_cluster_mask(ids: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """Same cluster and same chunk: tokens sorted by (cluster, position) with ``sorted``, cut into chunks of
    ``ceil(N / K)``. ids ``[B, heads, N]`` -> bool ``[B, heads, N, N]``."""
    b, heads, n = ids.shape
    c = -(-n // num_clusters)
    mask = torch.zeros(b, heads, n, n, dtype=torch.bool)
    for bi in range(b):
        for hi in range(heads):
            cid = ids[bi, hi].tolist()
            order = sorted(range(n), key=lambda t: (cid[t], t))
            chunk = {t: rank // c for rank, t in enumerate(order)}
            for i in range(n):
                mask[bi, hi, i, [j for j in range(n) if cid[j] == cid[i] and chunk[j] == chunk[i]]] = True
    return mask


def naive_kmeans_update(centroids: torch.Tensor, r: torch.Tensor, ids: torch.Tensor, decay: float) -> torch.Tensor:
    """One EMA step with loops: ``c <- unit(decay * c + (1 - decay) * mean of the unit routing vectors assigned to c)``
    over the whole batch; a centroid nobody was assigned to stays as it was."""
    new = centroids.double().clone()
    ru = _unit(r.double())
    for hi in range(centroids.shape[0]):
        for c in range(centroids.shape[1]):
            members = [ru[bi, hi, t] for bi in range(r.shape[0]) for t in range(r.shape[2]) if ids[bi, hi, t] == c]
            if members:
                mean = torch.stack(members).mean(0)
                new[hi, c] = _unit(decay * centroids[hi, c].double() + (1 - decay) * mean)
    return new


def naive_block_means(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """Mean of each block of ``block_size`` consecutive tokens (the last block: its real tokens only), by loops."""
    n = x.shape[2]
    return torch.stack([x[:, :, s:min(s + block_size, n)].double().mean(2) for s in range(0, n, block_size)], dim=2)


def naive_sinkhorn(logits: torch.Tensor, n_iters: int, temperature: float) -> torch.Tensor:
    """Sinkhorn in probability space (``exp``, then divide by row sums, then by column sums), float64: ``P``."""
    p = torch.exp((logits.double() - logits.double().amax((-2, -1), keepdim=True)) / temperature)
    for _ in range(n_iters):
        p = p / p.sum(-1, keepdim=True)
        p = p / p.sum(-2, keepdim=True)
    return p


def naive_sinkhorn_mask(choice: torch.Tensor, n: int, block_size: int) -> torch.Tensor:
    """Keys in the query's own block or in the block its block picked: ``[B, heads, nb]`` -> ``[B, heads, N, N]``."""
    b, heads, _ = choice.shape
    mask = torch.zeros(b, heads, n, n, dtype=torch.bool)
    for bi in range(b):
        for hi in range(heads):
            for i in range(n):
                own, picked = i // block_size, int(choice[bi, hi, i // block_size])
                mask[bi, hi, i, [j for j in range(n) if j // block_size in (own, picked)]] = True
    return mask


def naive_sinkhorn_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_p: torch.Tensor,
                             choice: torch.Tensor, block_size: int) -> torch.Tensor:
    """Dense float64 Sinkhorn attention with the straight-through factor, written out per (query, key) pair.

    Query block ``i`` attends its own block and block ``choice[i]``; each key of a picked block *other than its own*
    has its value multiplied by ``P[i, j*] / P[i, j*].detach()`` (1 in value; it carries the gradient to ``log P``).
    A block that picks itself attends its own keys once and gives ``log P`` no gradient.
    """
    b, heads, n, _ = q.shape
    mask = naive_sinkhorn_mask(choice, n, block_size)
    picked = torch.zeros(b, heads, n, n, dtype=torch.bool)
    for bi in range(b):
        for hi in range(heads):
            for i in range(n):
                j_star = int(choice[bi, hi, i // block_size])
                if j_star != i // block_size:
                    picked[bi, hi, i, [j for j in range(n) if j // block_size == j_star]] = True
    blk = torch.arange(n) // block_size
    st = torch.exp(log_p.double() - log_p.double().detach())[:, :, blk][:, :, :, blk]  # [B, h, N, N]
    q, k, v = (t.double() for t in (q, k, v))
    logits = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~mask, -math.inf)
    weights = torch.softmax(logits, dim=-1) * torch.where(picked, st, torch.ones_like(st))
    return weights @ v
