"""Tiled gather executor: exact sparse attention for separable mask patterns without any ``N x N`` tensor.

A pattern is *separable* when its 2-D mask is the product of one 1-D predicate on rows and one on columns
(``local``, ``dilated``, ``window``; the 1-D sequence forms use a trivial row axis). For each axis an
:class:`AxisPlan` groups query positions into tiles of ``t`` slots and gives every tile a fixed-size list of ``R``
key positions that contains the union of its queries' neighbourhoods, plus the exact boolean mask inside the tile,
evaluated with the *same* predicate as the specification in :mod:`yolo_attn.attention.patterns`. The 2-D plan is
the outer product of the two axis plans: ``T = Tr * Tc`` tiles of ``Q = tr * tc`` queries and ``R = Rr * Rc`` keys.

Queries are gathered into ``[B, heads, T, Q, d]``, keys/values into ``[B, heads, T, R, d]``, attention runs in
:func:`~yolo_attn.attention.kernel.masked_attention` with the cached additive mask ``[T, Q, R]``, and every token
reads its output back from its one *home* slot. Padding slots (clamped, duplicated positions) are computed but
never read, and duplicated keys are masked, so outputs and gradients are exact. Memory is ``O(N * R)``; tiles run
in chunks of about :data:`CHUNK_LOGITS` logits.

All index tensors are built with ``torch.arange`` arithmetic (no loops over tiles) by one implementation,
:func:`build_tile_plan`, from the map size: cached per ``(kind, h, w, params, device)`` for concrete sizes
(:func:`tile_plan`), and built inside the graph from the input's symbolic size under ``torch.jit.trace`` /
``torch.onnx.export`` (:func:`plan_for`), so exported graphs run at any input size. The slot counts per tile
depend only on the pattern options; only the tile count follows the map size.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Union

import torch

from .kernel import mask_to_bias, masked_attention
from .patterns import axis_neighbourhood, axis_window, band, window_shift

__all__ = [
    "AxisPlan", "TilePlan", "as_size", "band_axis", "build_tile_plan", "concrete_sizes", "fixed_sizes",
    "graph_constants", "is_symbolic", "neighbourhood_axis", "plan_for", "symbolic_sizes", "tile_plan",
    "tiled_attention", "window_axis",
]

#: Logits per chunk of tiles (batch * heads * tiles * Q * R): chunks keep the working set cache-sized and the
#: peak memory a small multiple of the inputs.
CHUNK_LOGITS = 1 << 19
#: The same limit on CUDA, where kernel launches (a few per chunk), not cache size, bound the time: one chunk covers
#: batch 32 x 2 heads x 120x120 tokens with a 7x7 window. Not tuned yet (see ``yolo-attn bench gpu``).
CUDA_CHUNK_LOGITS = 1 << 27

Predicate = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


Size = Union[int, torch.Tensor]


_FIXED_SIZES = [0]  # depth of nested fixed_sizes() blocks


def symbolic_sizes() -> bool:
    """Whether map sizes are symbolic now: under ``torch.jit.trace`` / ``torch.onnx.export`` (TorchScript exporter)
    every ``tensor.shape`` entry is a traced 0-d tensor, and plans must be built from it inside the graph -- unless
    the trace is of one input size (:func:`fixed_sizes`)."""
    return torch.jit.is_tracing() and not _FIXED_SIZES[0]


@contextlib.contextmanager
def fixed_sizes(enabled: bool = True) -> Iterator[None]:
    """Trace for one input size: map sizes become Python ints and every plan a constant of the graph.

    For exports without ``dynamic=True`` (ultralytics' default). The graph is then valid for the traced size only,
    as the rest of a static export is, and carries no plan arithmetic: OpenVINO's PyTorch frontend does not fold
    that arithmetic (measured: yolov5n-local 68 ms with the plans computed per inference vs 55 ms with constants,
    640 px, 2 threads). Outputs are the same either way (one implementation, :func:`build_tile_plan`). The batch
    size stays traced. Nested blocks are allowed; ``enabled=False`` is a no-op (for ``dynamic=True``).
    """
    _FIXED_SIZES[0] += bool(enabled)
    try:
        yield
    finally:
        _FIXED_SIZES[0] -= bool(enabled)


@contextlib.contextmanager
def graph_constants() -> Iterator[None]:
    """Silence the tracer's notice that tensors made from Python values become constants of the traced graph:
    inside this block they are constants by design (pattern options, never sizes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def concrete_sizes(*sizes: Size) -> tuple[Size, ...]:
    """Map sizes as the attention sees them: under :func:`fixed_sizes` a traced size becomes a Python int (a constant
    of the graph, by design: region splits, padding and plans are then decided once, as in eager mode); otherwise
    unchanged (ints in eager mode, 0-d tensors in a dynamic trace).

    Examples:
        >>> concrete_sizes(20, 30)
        (20, 30)
    """
    if not torch.jit.is_tracing() or symbolic_sizes():
        return sizes
    with graph_constants():
        return tuple(int(s) if isinstance(s, torch.Tensor) else s for s in sizes)


def as_size(length: Size) -> torch.Tensor:
    """A map size as a 0-d long tensor: a traced (symbolic) size as it is, an int as a new tensor."""
    return length if isinstance(length, torch.Tensor) else torch.full((), length, dtype=torch.long)


def is_symbolic(*sizes: Size) -> bool:
    """Whether any map size is a tensor (a traced symbolic size) rather than a Python int."""
    return any(isinstance(size, torch.Tensor) for size in sizes)


@dataclass(frozen=True)
class AxisPlan:
    """Tiling of one axis of length ``L``.

    The slot counts ``t`` (queries per tile) and ``R`` (keys per tile) depend only on the pattern options; only the
    tile count ``T`` depends on ``L``, so a plan built from a symbolic (traced) ``L`` has static inner dimensions.

    Attributes:
        q_pos: ``LongTensor[T, t]`` query position of each tile slot (clamped into the axis).
        k_pos: ``LongTensor[T, R]`` key position of each tile key slot (clamped into the axis).
        mask: ``BoolTensor[T, t, R]`` exact spec predicate, False on padded / duplicated key slots.
        home: ``LongTensor[L]`` flat slot ``tile * t + slot`` that owns each position's output.
        pred: The spec predicate ``(pq, pk) -> bool`` used to build ``mask`` (reused to dedupe global keys).
        t: Queries per tile (a Python int).
        r: Keys per tile (a Python int).
        n_tiles: Tile count ``T`` (a 0-d tensor; symbolic when traced).
    """

    q_pos: torch.Tensor
    k_pos: torch.Tensor
    mask: torch.Tensor
    home: torch.Tensor
    pred: Predicate
    t: int
    r: int
    n_tiles: torch.Tensor

    def to(self, device: torch.device) -> AxisPlan:
        """The same plan with its index tensors on ``device``."""
        move = functools.partial(torch.Tensor.to, device=device)
        return AxisPlan(*map(move, (self.q_pos, self.k_pos, self.mask, self.home)), self.pred, self.t, self.r,
                        self.n_tiles)


def _axis_plan(q_pos, q_home, k_pos, k_ok, pred, n_tiles) -> AxisPlan:
    mask = pred(q_pos[:, :, None], k_pos[:, None, :]) & k_ok[:, None, :]
    return AxisPlan(q_pos, k_pos, mask, q_home, pred, q_pos.shape[-1], k_pos.shape[-1], n_tiles)


def neighbourhood_axis(length: Size, window: int, dilation: int, tile: int) -> AxisPlan:
    """Axis plan for the (dilated) neighbourhood of :func:`~yolo_attn.attention.patterns.axis_neighbourhood`.

    Tiles live inside one residue sub-grid (positions ``r + dilation * m``): ``t = tile`` consecutive ``m`` per tile
    and ``R = t + window - 1`` consecutive sub-grid keys starting at the first query's window (shifted to fit the
    sub-grid). Sub-grids shorter than a tile repeat their last position (padding slots, never read) and mask
    the keys past their end.

    Args:
        length: Axis length ``L`` (an int, or a 0-d tensor when traced).
        window: Window size ``k``.
        dilation: Key spacing ``d``.
        tile: Queries per tile along this axis.

    Returns:
        The :class:`AxisPlan`.

    Examples:
        >>> neighbourhood_axis(20, 7, 1, 8).mask.shape
        torch.Size([3, 8, 14])
    """
    length = as_size(length)
    d = length.clamp(max=dilation)  # identical semantics: every residue sub-grid then has length 1
    t, r_len = tile, tile + window - 1
    n_tiles = ((length + d - 1) // d + t - 1) // t
    res = torch.arange(d)[:, None, None]
    sub_len = (length - res + d - 1) // d  # [d, 1, 1]
    mq = torch.minimum(torch.arange(n_tiles)[None, :, None] * t + torch.arange(t), sub_len - 1)  # [d, n, t]
    k = sub_len.clamp(max=window)
    first = torch.minimum((mq[:, :, :1] - k // 2).clamp(min=0), sub_len - k)
    mk = torch.minimum(first, (sub_len - r_len).clamp(min=0)) + torch.arange(r_len)  # [d, n, R]
    k_ok = mk < sub_len
    mk = torch.minimum(mk, sub_len - 1)
    p = torch.arange(length)
    home = ((p % d) * n_tiles + (p // d) // t) * t + (p // d) % t
    pred = functools.partial(axis_neighbourhood, length=length, window=window, dilation=d)
    return _axis_plan((res + d * mq).reshape(-1, t), home, (res + d * mk).reshape(-1, r_len),
                      k_ok.reshape(-1, r_len), pred, d * n_tiles)


def window_axis(length: Size, window: int, shift: bool | int) -> AxisPlan:
    """Axis plan for Swin windows: one tile per window, keys = queries = the window's positions.

    The effective window ``ws`` and shift come from :func:`~yolo_attn.attention.patterns.window_shift` (``ws``
    clamped to the axis, no shift when one window covers it); every tile has ``window`` slots, of which the
    first ``ws`` are the window and the rest padding.

    Args:
        length: Axis length (an int, or a 0-d tensor when traced).
        window: Requested window size.
        shift: Shift (False / True / int).

    Returns:
        The :class:`AxisPlan` with ``t = R = window``; slots outside the axis or past ``ws`` are padding.

    Examples:
        >>> window_axis(13, 8, True).q_pos.shape
        torch.Size([3, 8])
    """
    length = as_size(length)
    ws, s = window_shift(length, window, shift)
    n_tiles = (length + s + ws - 1) // ws
    slot = torch.arange(window)
    pos = torch.arange(n_tiles)[:, None] * ws - s + slot
    ok = (slot < ws) & (pos >= 0) & (pos < length)
    pos = torch.minimum(pos.clamp(min=0), length - 1)
    shifted = torch.arange(length) + s
    home = shifted // ws * window + shifted % ws
    pred = functools.partial(axis_window, window=ws, shift=s)
    return _axis_plan(pos, home, pos, ok, pred, n_tiles)


def band_axis(length: Size, window: int, dilation: int, tile: int) -> AxisPlan:
    """Axis plan for the lectures' 1-D band ``|i - j| <= window * dilation``, ``(i - j) % dilation == 0``.

    Args:
        length: Sequence length (an int, or a 0-d tensor when traced).
        window: Half-width in steps of ``dilation``.
        dilation: Step between attended positions.
        tile: Queries per tile.

    Returns:
        The :class:`AxisPlan` with ``R = t + 2 * window * dilation`` (keys past the sequence masked).

    Examples:
        >>> band_axis(100, 3, 1, 16).k_pos.shape
        torch.Size([7, 22])
    """
    length = as_size(length)
    t, reach = tile, window * dilation
    r_len = t + 2 * reach
    n_tiles = (length + t - 1) // t
    q = torch.minimum(torch.arange(n_tiles)[:, None] * t + torch.arange(t), length - 1)
    mk = torch.minimum((q[:, :1] - reach).clamp(min=0), (length - r_len).clamp(min=0)) + torch.arange(r_len)
    pred = functools.partial(band, window=window, dilation=dilation)
    return _axis_plan(q, torch.arange(length), torch.minimum(mk, length - 1), mk < length, pred, n_tiles)


def trivial_axis() -> AxisPlan:
    """Axis plan of a length-1 axis (the row axis of the 1-D sequence patterns)."""
    zero = torch.zeros(1, 1, dtype=torch.long)
    return AxisPlan(zero, zero, torch.ones(1, 1, 1, dtype=torch.bool), torch.zeros(1, dtype=torch.long), torch.eq,
                    1, 1, as_size(1))


@dataclass(frozen=True)
class TilePlan:
    """2-D tiling: outer product of a row and a column :class:`AxisPlan` over a ``h x w`` map.

    Attributes:
        rows: Row axis plan.
        cols: Column axis plan.
        q_idx: ``LongTensor[T, Q]`` token index of each query slot.
        k_idx: ``LongTensor[T, R]`` token index of each key slot.
        bias: ``FloatTensor[T, Q, R]``: 0 where the spec allows, a large negative number elsewhere.
        home: ``LongTensor[N]`` flat output slot of each token.
        width: Map width (token ``t = y * width + x``; a 0-d tensor when traced).
    """

    rows: AxisPlan
    cols: AxisPlan
    q_idx: torch.Tensor
    k_idx: torch.Tensor
    bias: torch.Tensor
    home: torch.Tensor
    width: Size

    def allowed(self, tq: torch.Tensor, tk: torch.Tensor) -> torch.Tensor:
        """Spec predicate on token indices (broadcasting): row predicate and column predicate."""
        w = self.width
        return self.rows.pred(tq // w, tk // w) & self.cols.pred(tq % w, tk % w)

    def rel_index(self, extent: tuple[int, int]) -> torch.Tensor:
        """``LongTensor[T, Q, R]`` index into a flattened ``[(2a-1) * (2b-1)]`` relative position table.

        Offsets ``dy = y_q - y_k`` are clipped to ``[-(a-1), a-1]`` (same for ``dx`` with ``b``).
        """
        a, b = extent
        dy = (self.rows.q_pos[:, :, None] - self.rows.k_pos[:, None, :]).clamp(1 - a, a - 1) + a - 1
        dx = (self.cols.q_pos[:, :, None] - self.cols.k_pos[:, None, :]).clamp(1 - b, b - 1) + b - 1
        idx = dy[:, None, :, None, :, None] * (2 * b - 1) + dx[None, :, None, :, None, :]
        return idx.reshape(-1, self.rows.t * self.cols.t, self.rows.r * self.cols.r)


def _outer(r: torch.Tensor, c: torch.Tensor, w: Size) -> torch.Tensor:
    return (r[:, None, :, None] * w + c[None, :, None, :]).reshape(-1, r.shape[-1] * c.shape[-1])


def build_tile_plan(kind: str, h: Size, w: Size, params: tuple, device: torch.device, dtype: torch.dtype) -> TilePlan:
    """Build the :class:`TilePlan` of a separable pattern from the map size (ints, or 0-d tensors when traced).

    The one implementation of every plan: :func:`tile_plan` caches it for concrete sizes; traced graphs call it
    directly with the input's symbolic size, so the plan is computed inside the exported graph.

    Args:
        kind: ``"neighbourhood"`` (params ``(window, dilation, tile)``), ``"window"`` (``(window, shift)``) or
            ``"band"`` (``(window, dilation, tile)``, over the flattened sequence).
        h: Map height.
        w: Map width.
        params: Pattern parameters as a hashable tuple.
        device: Device of the index tensors.
        dtype: Dtype of the additive bias.

    Returns:
        The :class:`TilePlan`.

    Examples:
        >>> build_tile_plan("window", 13, 10, (8, True), torch.device("cpu"), torch.float32).q_idx.shape
        torch.Size([6, 64])
    """
    if kind == "neighbourhood":
        window, dilation, tile = params
        rows, cols = neighbourhood_axis(h, window, dilation, tile), neighbourhood_axis(w, window, dilation, tile)
    elif kind == "window":
        rows, cols = window_axis(h, *params), window_axis(w, *params)
    else:
        window, dilation, tile = params
        rows, cols, h, w = trivial_axis(), band_axis(h * w, window, dilation, tile), 1, h * w
    (tr, tc), (rr, rc) = (rows.t, cols.t), (rows.r, cols.r)
    mask = rows.mask[:, None, :, None, :, None] & cols.mask[None, :, None, :, None, :]
    token = torch.arange(h * w)
    ry, cx = rows.home[token // w], cols.home[token % w]
    home = (((ry // tr) * cols.n_tiles + cx // tc) * tr + ry % tr) * tc + cx % tc
    to = functools.partial(torch.Tensor.to, device=device)
    return TilePlan(
        rows=rows.to(device),
        cols=cols.to(device),
        q_idx=to(_outer(rows.q_pos, cols.q_pos, w)),
        k_idx=to(_outer(rows.k_pos, cols.k_pos, w)),
        bias=to(mask_to_bias(mask.reshape(-1, tr * tc, rr * rc), dtype)),
        home=to(home),
        width=w,
    )


#: Cached :func:`build_tile_plan` for concrete (int) map sizes, keyed by ``(kind, h, w, params, device, dtype)``.
tile_plan = functools.lru_cache(maxsize=64)(build_tile_plan)


def plan_for(kind: str, h: Size, w: Size, params: tuple, device: torch.device, dtype: torch.dtype) -> TilePlan:
    """The :class:`TilePlan` for a map size: cached for ints, built in the graph for symbolic (traced) sizes."""
    if is_symbolic(h, w):
        return build_tile_plan(kind, h, w, params, device, dtype)
    return tile_plan(kind, h, w, params, device, dtype)


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[:, :, idx]`` for ``x [B, h, N, d]`` and ``idx [T, S]`` -> ``[B, h, T, S, d]``."""
    # reshape with sizes, not unflatten: the ONNX exporter infers no shape through unflatten and falls back to the
    # traced (fixed) one, which later reshapes would then bake in
    return x[:, :, idx.reshape(-1)].reshape(x.shape[0], x.shape[1], -1, idx.shape[-1], x.shape[-1])


def tiled_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: TilePlan,
    bias: torch.Tensor | None = None,
    extra_k: torch.Tensor | None = None,
    extra_v: torch.Tensor | None = None,
    extra_bias: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Run attention of the spatial tokens over the plan's tiles.

    Args:
        q: Spatial queries ``[B, heads, N, d]``.
        k: Spatial keys ``[B, heads, N, d]``.
        v: Spatial values ``[B, heads, N, dv]``.
        plan: The :class:`TilePlan` of the pattern.
        bias: Optional extra additive bias broadcastable to ``[heads, T, Q, R]`` (relative positions).
        extra_k: Optional keys ``[B, heads, E, d]`` appended to every tile (global keys).
        extra_v: Values ``[B, heads, E, dv]`` of the extra keys.
        extra_bias: ``[T, Q, E]`` additive bias for the extra keys (masks keys already in the neighbourhood).
        dropout_p: Attention dropout probability.

    Returns:
        ``[B, heads, N, dv]`` outputs of the spatial queries.

    Examples:
        >>> plan = tile_plan("neighbourhood", 5, 7, (3, 1, 8), torch.device("cpu"), torch.float32)
        >>> q = torch.randn(1, 2, 35, 4)
        >>> tiled_attention(q, q, q, plan).shape
        torch.Size([1, 2, 35, 4])
    """
    if torch.jit.is_tracing():  # one chunk: no size is baked into the graph (the tile count may be symbolic)
        chunks = [(slice(None), plan.rows.n_tiles * plan.cols.n_tiles)]
    else:
        n_tiles, per_tile = plan.bias.shape[0], q.shape[0] * q.shape[1] * plan.bias[0].numel()
        step = max(1, (CHUNK_LOGITS if q.device.type == "cpu" else CUDA_CHUNK_LOGITS) // per_tile)
        chunks = [(slice(start, start + step), min(step, n_tiles - start)) for start in range(0, n_tiles, step)]
    outs = [_attend_tiles(q, k, v, plan, tiles, count, bias, extra_k, extra_v, extra_bias, dropout_p)
            for tiles, count in chunks]
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)  # (a one-input Concat is a copy in ONNX graphs)
    return out.reshape(out.shape[0], out.shape[1], -1, out.shape[-1])[:, :, plan.home]


def _attend_tiles(q, k, v, plan, tiles, count, bias, extra_k, extra_v, extra_bias, dropout_p):
    """Attention of one chunk of ``count`` tiles: ``[B, heads, count, Q, dv]``.

    ``count`` is passed rather than read off a gathered tensor: under ``torch.onnx.export`` the shape of an
    intermediate may be folded to its traced value, the computed (symbolic) count never is."""
    qt, kt, vt = _gather(q, plan.q_idx[tiles]), _gather(k, plan.k_idx[tiles]), _gather(v, plan.k_idx[tiles])
    full_bias = plan.bias[tiles] if bias is None else plan.bias[tiles] + bias[..., tiles, :, :]
    if extra_k is not None:
        shape = (-1, -1, count, -1, -1)
        kt = torch.cat([kt, extra_k.unsqueeze(2).expand(shape)], dim=3)
        vt = torch.cat([vt, extra_v.unsqueeze(2).expand(shape)], dim=3)
        full_bias = torch.cat([full_bias, extra_bias[tiles].expand(*full_bias.shape[:-1], -1)], dim=-1)
    return masked_attention(qt, kt, vt, bias=full_bias, dropout_p=dropout_p)
