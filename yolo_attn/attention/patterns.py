"""Attention patterns as pure boolean mask functions: the SPECIFICATION of every mask-defined variant.

Every function here maps a token map ``(h, w)`` (plus pattern parameters) to a ``BoolTensor[N, N]`` with
``N = h * w`` tokens in row-major order (token ``t = y * w + x``); ``mask[i, j]`` is True when query ``i`` may attend
to key ``j``. Masks are built by comparing ``torch.arange`` indices only (no Python loops, no slice assignment), so
they are traceable and exportable. The fast paths in :mod:`yolo_attn.attention.functional` evaluate the *same*
elementwise predicates (:func:`axis_neighbourhood`, :func:`axis_window`) on small tiles of indices, which is what
makes them exact.

Conventions shared by the 2-D neighbourhood patterns (``local``, ``dilated``), per axis of length ``L``:

* Positions with the same residue ``p % dilation`` form a sub-grid of length ``L_r = ceil((L - r) / dilation)``;
  ``m = p // dilation`` is the position inside it.
* The window ``k`` is clamped to the sub-grid (``k_r = min(k, L_r)``): a window larger than the map becomes the
  whole map, so ``local(k >= map) == full`` and every query always sees exactly ``k_r`` keys along that axis.
* The window starts at ``clamp(m - k_r // 2, 0, L_r - k_r)`` (neighbourhood attention semantics: at the border the
  window is shifted inside the map instead of truncated). Even ``k`` is allowed: the window then reaches
  ``k // 2`` positions before the query and ``k // 2 - 1`` after it.

``window`` (Swin) groups tokens whose window ids agree, with row id ``(y + s) // ws`` and column id
``(x + s) // ws``; this is exactly what Swin's cyclic shift by ``s`` plus its region mask computes, and it needs no
divisibility of the map by ``ws``. ``ws`` is clamped to the map per axis and the shift is dropped on an axis the
window covers entirely (as Swin does), so ``window(map size) == full``.
"""

from __future__ import annotations

import torch

__all__ = [
    "axis_neighbourhood",
    "axis_window",
    "band",
    "full_mask",
    "local_mask",
    "dilated_mask",
    "local1d_mask",
    "dilated1d_mask",
    "window_mask",
    "axial_mask",
    "area_mask",
    "area_length",
    "global_mask",
    "window_shift",
]


def axis_neighbourhood(pq: torch.Tensor, pk: torch.Tensor, length: int, window: int, dilation: int = 1) -> torch.Tensor:
    """Elementwise 1-D neighbourhood predicate along one axis (broadcasting ``pq`` against ``pk``).

    Args:
        pq: Integer tensor of query positions in ``[0, length)``.
        pk: Integer tensor of key positions in ``[0, length)``, broadcastable with ``pq``.
        length: Axis length ``L``.
        window: Window size ``k`` (>= 1) counted in sub-grid steps; clamped to each sub-grid's length.
        dilation: Spacing ``d`` between attended positions (1 = contiguous neighbourhood).

    Returns:
        Bool tensor of the broadcast shape: True where key ``pk`` lies in the window of query ``pq``.

    Examples:
        >>> i = torch.arange(5)
        >>> axis_neighbourhood(i[:, None], i[None, :], 5, 3).sum(1).tolist()
        [3, 3, 3, 3, 3]
    """
    residue = pq % dilation
    sub_len = (length - residue + dilation - 1) // dilation
    k = sub_len.clamp(max=window)
    start = torch.minimum((pq // dilation - k // 2).clamp(min=0), sub_len - k)
    mk = pk // dilation
    return (pk % dilation == residue) & (mk >= start) & (mk < start + k)


def band(pq: torch.Tensor, pk: torch.Tensor, window: int, dilation: int = 1) -> torch.Tensor:
    """Elementwise 1-D band predicate of the lectures: ``|pq - pk| <= window * dilation`` and ``(pq - pk) % dilation == 0``.

    Args:
        pq: Integer tensor of query positions.
        pk: Integer tensor of key positions, broadcastable with ``pq``.
        window: Half-width of the band, in steps of ``dilation``.
        dilation: Step between attended positions.

    Returns:
        Bool tensor of the broadcast shape.

    Examples:
        >>> band(torch.tensor(3), torch.arange(6), 1, 2).tolist()
        [False, True, False, True, False, True]
    """
    diff = pq - pk
    return (diff.abs() <= window * dilation) & (diff % dilation == 0)


def window_shift(length: int | torch.Tensor, window: int, shift: bool | int) -> tuple:
    """Effective (window, shift) on one axis: window clamped to the axis, no shift if one window covers it.

    Args:
        length: Axis length (an int, or a 0-d tensor for a symbolic traced size).
        window: Requested window size (>= 1).
        shift: False/0 for none, True for ``window // 2`` (Swin), or an explicit int.

    Returns:
        ``(ws, s)`` with ``1 <= ws <= length`` and ``0 <= s < ws``: ints for an int ``length``, 0-d tensors for a
        tensor ``length``.

    Examples:
        >>> window_shift(13, 8, True), window_shift(5, 8, True)
        ((8, 4), (5, 0))
    """
    n = length if isinstance(length, torch.Tensor) else torch.full((), length, dtype=torch.long)
    ws = n.clamp(max=window)
    s = torch.where(ws == n, 0, (ws // 2 if shift is True else int(shift)) % ws)
    return (ws, s) if isinstance(length, torch.Tensor) else (int(ws), int(s))


def axis_window(pq: torch.Tensor, pk: torch.Tensor, window: int, shift: int = 0) -> torch.Tensor:
    """Elementwise 1-D Swin window predicate: same window id ``(p + shift) // window``.

    Args:
        pq: Integer tensor of query positions.
        pk: Integer tensor of key positions, broadcastable with ``pq``.
        window: Effective window size (see :func:`window_shift`).
        shift: Effective shift.

    Returns:
        Bool tensor of the broadcast shape.

    Examples:
        >>> i = torch.arange(4)
        >>> axis_window(i[:, None], i[None, :], 2, 1)[0].tolist()
        [True, False, False, False]
    """
    return (pq + shift) // window == (pk + shift) // window


def _grid(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    i = torch.arange(n)
    return i[:, None], i[None, :]


def _separable(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Combine per-axis masks ``[h, h]`` and ``[w, w]`` into the 2-D mask ``[h*w, h*w]`` (row-major tokens)."""
    h, w = rows.shape[0], cols.shape[0]
    return (rows[:, None, :, None] & cols[None, :, None, :]).reshape(h * w, h * w)


def full_mask(h: int, w: int) -> torch.Tensor:
    """Every query attends to every key. Returns ``BoolTensor[h*w, h*w]`` of True.

    Examples:
        >>> full_mask(2, 3).shape
        torch.Size([6, 6])
    """
    return torch.ones(h * w, h * w, dtype=torch.bool)


def dilated_mask(h: int, w: int, window: int = 7, dilation: int = 2) -> torch.Tensor:
    """2-D dilated ("stride") neighbourhood: ``window x window`` keys spaced ``dilation`` apart.

    Args:
        h: Map height.
        w: Map width.
        window: Neighbourhood size per axis, in sub-grid steps (clamped to the sub-grid, see module doc).
        dilation: Spacing between attended keys; 1 gives :func:`local_mask`.

    Returns:
        ``BoolTensor[h*w, h*w]``.

    Examples:
        >>> dilated_mask(8, 8, window=3, dilation=2).sum(1).unique().tolist()
        [9]
    """
    ry, cy = _grid(h)
    rx, cx = _grid(w)
    return _separable(axis_neighbourhood(ry, cy, h, window, dilation), axis_neighbourhood(rx, cx, w, window, dilation))


def local_mask(h: int, w: int, window: int = 7) -> torch.Tensor:
    """2-D truncated local attention: each query sees exactly ``min(window, h) x min(window, w)`` keys.

    Args:
        h: Map height.
        w: Map width.
        window: Neighbourhood size per axis (clamped to the map; shifted inside the map at borders).

    Returns:
        ``BoolTensor[h*w, h*w]``.

    Examples:
        >>> local_mask(5, 7, window=3).sum(1).unique().tolist()
        [9]
    """
    return dilated_mask(h, w, window, 1)


def dilated1d_mask(h: int, w: int, window: int = 3, dilation: int = 2) -> torch.Tensor:
    """Lecture-style 1-D stride attention over the flattened sequence: ``|i-j| <= window*dilation`` and
    ``(i-j) % dilation == 0`` (truncated at the sequence ends, so border queries see fewer keys).

    Args:
        h: Map height.
        w: Map width.
        window: Half-width in steps of ``dilation``.
        dilation: Step between attended tokens.

    Returns:
        ``BoolTensor[h*w, h*w]``.

    Examples:
        >>> dilated1d_mask(1, 6, window=1, dilation=2)[2].nonzero().flatten().tolist()
        [0, 2, 4]
    """
    i, j = _grid(h * w)
    return band(i, j, window, dilation)


def local1d_mask(h: int, w: int, window: int = 3) -> torch.Tensor:
    """Lecture-style 1-D local (truncated) attention over the flattened sequence: ``|i - j| <= window``.

    Args:
        h: Map height.
        w: Map width.
        window: Half-width of the band.

    Returns:
        ``BoolTensor[h*w, h*w]``.

    Examples:
        >>> local1d_mask(1, 5, window=1).sum(1).tolist()
        [2, 3, 3, 3, 2]
    """
    return dilated1d_mask(h, w, window, 1)


def window_mask(h: int, w: int, window: int = 7, shift: bool | int = False) -> torch.Tensor:
    """Swin (shifted) window attention for any ``h x w``: same window id on both axes.

    Args:
        h: Map height.
        w: Map width.
        window: Window size (clamped to the map per axis).
        shift: False, True (``window // 2``) or an int shift.

    Returns:
        ``BoolTensor[h*w, h*w]``.

    Examples:
        >>> window_mask(4, 4, window=2).sum(1).unique().tolist()
        [4]
    """
    wy, sy = window_shift(h, window, shift)
    wx, sx = window_shift(w, window, shift)
    ry, cy = _grid(h)
    rx, cx = _grid(w)
    return _separable(axis_window(ry, cy, wy, sy), axis_window(rx, cx, wx, sx))


def axial_mask(h: int, w: int) -> torch.Tensor:
    """Axial attention: same row or same column. Returns ``BoolTensor[h*w, h*w]``.

    Examples:
        >>> axial_mask(3, 4).sum(1).unique().tolist()
        [6]
    """
    t = torch.arange(h * w)
    y, x = t // w, t % w
    return (y[:, None] == y[None, :]) | (x[:, None] == x[None, :])


def area_length(n, area: int):
    """Tokens per stripe of :func:`area_mask`: ``ceil(n / area)`` (an int, or a 0-d tensor under tracing).

    Examples:
        >>> area_length(80 * 80, 4), area_length(10, 4)
        (1600, 3)
    """
    return (n + area - 1) // area


def area_mask(h: int, w: int, area: int = 4) -> torch.Tensor:
    """YOLO12 area attention: the row-major token sequence cut into ``area`` consecutive stripes.

    Token ``t`` lies in stripe ``t // c`` with ``c = ceil(h * w / area)``; a query attends every key of its stripe.
    When ``area`` divides ``h`` the stripes are bands of ``h / area`` whole rows (YOLO12 at the sizes it is used).
    When it divides ``h * w`` but not ``h``, a stripe boundary falls inside a row: the same tokens ultralytics'
    ``AAttn`` groups by reshaping the sequence. When it does not divide ``h * w`` (where ``AAttn`` cannot run), the
    last stripe is shorter (``h * w - (area - 1) * c`` tokens; empty on maps smaller than ``area`` stripes of ``c``).
    ``area=1`` is full attention; ``area >= h * w`` leaves every token alone.

    Args:
        h: Map height.
        w: Map width.
        area: Number of stripes (>= 1).

    Returns:
        ``BoolTensor[h*w, h*w]``.

    Examples:
        >>> area_mask(8, 5, area=4).sum(1).unique().tolist()
        [10]
    """
    stripe = torch.arange(h * w) // area_length(h * w, area)
    return stripe[:, None] == stripe[None, :]


def global_mask(base: torch.Tensor, global_idx: torch.Tensor, num_global_tokens: int = 0) -> torch.Tensor:
    """Add global tokens to a base mask: global tokens attend to all and are attended by all.

    Args:
        base: Base pattern ``BoolTensor[N, N]`` over the spatial tokens.
        global_idx: ``LongTensor[g]`` of spatial token indices designated global.
        num_global_tokens: ``G`` extra tokens placed *before* the spatial tokens, all global.

    Returns:
        ``BoolTensor[G+N, G+N]``; with ``g = G = 0`` it equals ``base``.

    Examples:
        >>> global_mask(local_mask(4, 4, 3), torch.tensor([5]), num_global_tokens=1).shape
        torch.Size([17, 17])
    """
    n, g = base.shape[0], num_global_tokens
    t = torch.arange(g + n)
    is_global = (t < g) | (t[:, None] == global_idx.to(t.device)[None, :] + g).any(1)
    padded = torch.nn.functional.pad(base, (g, 0, g, 0))
    return padded | is_global[:, None] | is_global[None, :]
