"""Independent references for the attention tests: dense float64 attention and naive (i, j) mask builders.

Written without any library code: plain loops over token pairs for the masks, one einsum-softmax-einsum for the
attention. Other test modules import :func:`reference_attention`.
"""

from __future__ import annotations

import functools
import math

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


def _from_pairs(n: int, allowed) -> torch.Tensor:
    return torch.tensor([[bool(allowed(i, j)) for j in range(n)] for i in range(n)])


def _window_positions(length: int, centre: int, k: int, d: int) -> set[int]:
    """Positions of the neighbourhood of ``centre``: walk its residue class as a list, slide the window inside."""
    members = [p for p in range(length) if p % d == centre % d]
    k = min(k, len(members))
    first = min(max(members.index(centre) - k // 2, 0), len(members) - k)
    return set(members[first:first + k])


def naive_local(h: int, w: int, window: int, dilation: int = 1) -> torch.Tensor:
    """Naive 2-D (dilated) neighbourhood mask."""
    def allowed(i, j):
        return (j // w in _window_positions(h, i // w, window, dilation)
                and j % w in _window_positions(w, i % w, window, dilation))
    return _from_pairs(h * w, allowed)


def naive_band(h: int, w: int, window: int, dilation: int = 1) -> torch.Tensor:
    """Naive lecture 1-D (strided) band over the flattened sequence."""
    def allowed(i, j):
        steps = [i + s * dilation for s in range(-window, window + 1)]
        return j in steps
    return _from_pairs(h * w, allowed)


def naive_window(h: int, w: int, window: int, shift: int = 0) -> torch.Tensor:
    """Naive Swin window mask: explicit window ranges starting at ``-shift`` (clamped as documented)."""
    def ranges(length):
        ws = min(window, length)
        s = 0 if ws == length else shift % ws
        out, start = [], -s
        while start < length:
            out.append(set(range(max(start, 0), min(start + ws, length))))
            start += ws
        return out
    rows, cols = ranges(h), ranges(w)

    def allowed(i, j):
        same_row = any(i // w in r and j // w in r for r in rows)
        return same_row and any(i % w in c and j % w in c for c in cols)
    return _from_pairs(h * w, allowed)


def naive_axial(h: int, w: int) -> torch.Tensor:
    """Naive axial mask."""
    return _from_pairs(h * w, lambda i, j: i // w == j // w or i % w == j % w)


def naive_global(base: torch.Tensor, global_idx: list[int], num_global_tokens: int = 0) -> torch.Tensor:
    """Naive global mask over ``G`` leading tokens plus designated spatial tokens."""
    g, n = num_global_tokens, base.shape[0]
    special = set(range(g)) | {g + t for t in global_idx}

    def allowed(i, j):
        if i in special or j in special:
            return True
        return i >= g and j >= g and bool(base[i - g, j - g])
    return _from_pairs(g + n, allowed)


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
