"""Functional attention over mask-defined patterns: :func:`attend`, :func:`pattern_mask` and the pattern registry.

Each registered pattern pairs its specification (a mask function from :mod:`yolo_attn.attention.patterns`) with a
fast path that never builds an ``N x N`` tensor: the tiled gather executor of :mod:`yolo_attn.attention.tiling`
for separable patterns, a joint row/column softmax for ``axial``, and the executor plus a few dense global rows
for ``global``. ``full`` uses the fused ``scaled_dot_product_attention``; ``custom`` is dense by nature.
Tests hold every fast path to ``softmax(q k^T / sqrt(d) + mask) v`` with the mask from :func:`pattern_mask`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from . import patterns as P
from .flex import choose_backend, run_flex
from .kernel import joint_softmax, mask_to_bias, masked_attention
from .options import OPTION_ALIASES, TILE, allowed_options, canonical_name, resolve
from .tiling import Size, TilePlan, graph_constants, is_symbolic, plan_for, symbolic_sizes, tiled_attention

__all__ = ["attend", "pattern_mask", "relative_position_bias", "PATTERNS", "PatternSpec"]

Runner = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class PatternSpec:
    """One registered pattern.

    Attributes:
        name: Registry name.
        mask: ``(h, w, **options) -> BoolTensor`` specification.
        defaults: Allowed pattern options with their defaults.
        plan_key: For separable patterns, ``(h, w, options) -> (kind, params)`` naming the cached tile plan.
        run: Fast path ``(q, k, v, h, w, options, rel_pos_bias, dropout_p) -> Tensor``; defaults to the tiled
            executor over ``plan_key``.
        rel_pos: Whether a relative position bias table is supported.
        sub_patterns: ``options -> names`` of patterns whose options this one also accepts (global base, mixed).
        flex_options: ``(options, n) -> options`` as :mod:`~yolo_attn.attention.flex`'s mask mod reads them
            (global: its base resolved), for the CUDA flex path.
    """

    name: str
    mask: Callable[..., torch.Tensor]
    defaults: dict[str, Any] = field(default_factory=dict)
    plan_key: Callable[..., tuple[str, tuple]] | None = None
    run: Runner | None = None
    rel_pos: bool = False
    sub_patterns: Callable[[dict], tuple] = lambda options: ()
    flex_options: Callable[[dict, int], dict] = lambda options, n: options

    def __call__(self, q, k, v, h, w, options, rel_pos_bias=None, dropout_p=0.0) -> torch.Tensor:
        """Run the fast path on ``[B, heads, N, d]`` tensors (options already resolved); on CUDA the backend table
        may send the pattern to FlexAttention instead (:func:`yolo_attn.attention.flex.choose_backend`)."""
        if choose_backend(self.name, q, dropout_p) == "flex":
            out = run_flex(self.name, q, k, v, h, w, self.flex_options(options, h * w), rel_pos_bias)
            if out is not None:
                return out
        return (self.run or _run_tiled)(self, q, k, v, h, w, options, rel_pos_bias, dropout_p)

    def plan(self, h: Size, w: Size, options: dict, device: torch.device, dtype: torch.dtype) -> TilePlan:
        """The :class:`~yolo_attn.attention.tiling.TilePlan` of this separable pattern (cached for int sizes)."""
        kind, params = self.plan_key(h, w, options)
        return plan_for(kind, h, w, params, device, dtype)


PATTERNS: dict[str, PatternSpec] = {}


def register_pattern(spec: PatternSpec) -> PatternSpec:
    """Add a pattern to :data:`PATTERNS` (names are unique)."""
    if spec.name in PATTERNS:
        raise ValueError(f"attention pattern {spec.name!r} is already registered")
    PATTERNS[spec.name] = spec
    return spec


def relative_position_bias(table: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Dense relative position bias ``[heads, N, N]``: ``table[:, dy + a - 1, dx + b - 1]`` with ``dy = y_q - y_k``.

    Offsets beyond the table (``|dy| > a - 1``) are clipped to its border, exactly as in the tiled paths.

    Args:
        table: ``[heads, 2a-1, 2b-1]`` learned biases.
        hw: Map size ``(h, w)``.

    Returns:
        ``[heads, h*w, h*w]`` additive bias.

    Examples:
        >>> relative_position_bias(torch.zeros(2, 5, 5), (3, 4)).shape
        torch.Size([2, 12, 12])
    """
    h, w = hw
    a, b = (table.shape[1] + 1) // 2, (table.shape[2] + 1) // 2
    t = torch.arange(h * w, device=table.device)
    dy = (t[:, None] // w - t[None, :] // w).clamp(1 - a, a - 1) + a - 1
    dx = (t[:, None] % w - t[None, :] % w).clamp(1 - b, b - 1) + b - 1
    return table.flatten(1)[:, dy * (2 * b - 1) + dx]


@functools.lru_cache(maxsize=64)
def _rel_index(kind: str, h: int, w: int, params: tuple, device: torch.device, extent: tuple[int, int]):
    return plan_for(kind, h, w, params, device, torch.float32).rel_index(extent)


def _tiled_rel_bias(table: torch.Tensor, spec: PatternSpec, plan: TilePlan, h: Size, w: Size,
                    options: dict) -> torch.Tensor:
    """``[heads, T, Q, R]`` bias gathered from the table; the index is cached for int sizes, built in the graph
    from the plan for symbolic ones."""
    extent = ((table.shape[1] + 1) // 2, (table.shape[2] + 1) // 2)
    if is_symbolic(h, w):
        return table.flatten(1)[:, plan.rel_index(extent)]
    kind, params = spec.plan_key(h, w, options)
    return table.flatten(1)[:, _rel_index(kind, h, w, params, table.device, extent)]


def _run_tiled(spec, q, k, v, h, w, options, rel_pos_bias, dropout_p):
    plan = spec.plan(h, w, options, q.device, q.dtype)
    bias = None if rel_pos_bias is None else _tiled_rel_bias(rel_pos_bias, spec, plan, h, w, options)
    return tiled_attention(q, k, v, plan, bias=bias, dropout_p=dropout_p)


def _run_full(spec, q, k, v, h, w, options, rel_pos_bias, dropout_p):
    bias = None if rel_pos_bias is None else relative_position_bias(rel_pos_bias, (h, w)).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)


def _axial_self_bias(h: Size, w: Size, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """-ln 2 on the query's own key: ``[w, w]`` for the row logits, ``[h, 1, h]`` for the column logits, in the
    softmax's precision. Cached for int sizes, built in the graph for symbolic ones."""
    dtype = torch.promote_types(dtype, torch.float32)
    if is_symbolic(h, w):
        return _self_bias(h, w, device, dtype)
    return _cached_self_bias(h, w, device, dtype)


def _self_bias(h: Size, w: Size, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = torch.arange(w, device=device), torch.arange(h, device=device)
    half = -math.log(2.0)
    return ((xs[:, None] == xs[None, :]).to(dtype) * half, (ys[:, None] == ys[None, :]).to(dtype)[:, None, :] * half)


_cached_self_bias = functools.lru_cache(maxsize=64)(_self_bias)


def _run_axial(spec, q, k, v, h, w, options, rel_pos_bias, dropout_p):
    """Row logits ``[B, heads, h, w, w]`` and column logits ``[B, heads, h, w, h]`` in one joint softmax.

    The query's own key lies in its row and in its column; each copy gets its logit minus ln 2, so the two together
    weigh exactly what the one key weighs in the specification (no mask needed)."""
    b, heads = q.shape[:2]
    qg, kg, vg = (t.reshape(b, heads, h, w, t.shape[-1]) for t in (q * q.shape[-1] ** -0.5, k, v))
    row = qg @ kg.transpose(-2, -1)
    col = (qg.transpose(2, 3) @ kg.transpose(2, 3).transpose(-2, -1)).transpose(2, 3)
    w_row, w_col = joint_softmax(row, col, bias=_axial_self_bias(h, w, q.device, q.dtype), dropout_p=dropout_p)
    out = w_row.to(v.dtype) @ vg + (w_col.to(v.dtype).transpose(2, 3) @ vg.transpose(2, 3)).transpose(2, 3)
    return out.reshape(b, heads, -1, out.shape[-1])


def _global_index(global_idx: Any, n: Size) -> list[int]:
    """Sorted unique ``global_idx`` as ints (a constant of a traced graph); checked against ``n`` when concrete."""
    with graph_constants():
        idx = sorted(set(torch.as_tensor(global_idx, dtype=torch.long).reshape(-1).tolist()))
    if idx and not is_symbolic(n) and (idx[0] < 0 or idx[-1] >= n):
        raise ValueError(f"global_idx={idx} must lie in [0, {n}) for a map of {n} tokens")
    return idx


def _split_global(options: dict) -> tuple[PatternSpec, dict]:
    own = {"base", "global_idx", "num_global_tokens"}
    return resolve(PATTERNS, options["base"], {k: v for k, v in options.items() if k not in own})


def _global_flex_options(options: dict, n: int) -> dict:
    """The global pattern's options for flex: its base's canonical name and resolved options, the indices as ints."""
    base, base_options = _split_global(options)
    return {**base_options, "base": base.name, "global_idx": tuple(_global_index(options["global_idx"], n)),
            "num_global_tokens": options["num_global_tokens"]}


def _global_pattern_mask(h: int, w: int, **options) -> torch.Tensor:
    base, base_options = _split_global(options)
    gidx = torch.tensor(_global_index(options["global_idx"], h * w), dtype=torch.long)
    return P.global_mask(base.mask(h, w, **base_options), gidx, options["num_global_tokens"])


def _run_global(spec, q, k, v, h, w, options, rel_pos_bias, dropout_p):
    """Base pattern for the spatial queries plus the global keys; dense rows for the global queries."""
    base, base_options = _split_global(options)
    n, g = h * w, options["num_global_tokens"]
    idx = _global_index(options["global_idx"], n)
    if g == 0 and not idx:
        return base(q, k, v, h, w, base_options, None, dropout_p)
    if base.plan_key is None:
        raise ValueError(f"global attention needs a tiled base pattern, got base={base.name!r}")
    plan = base.plan(h, w, base_options, q.device, q.dtype)
    with graph_constants():
        gidx = torch.tensor(idx, dtype=torch.long, device=q.device)
    rows = torch.cat([torch.arange(g, device=q.device), gidx + g])
    in_base = plan.allowed(plan.q_idx[:, :, None], gidx)  # [T, Q, g]: already a neighbour, do not count twice
    tokens = torch.ones(*plan.q_idx.shape, g, dtype=torch.bool, device=q.device)  # learned tokens: always attended
    extra_bias = mask_to_bias(torch.cat([tokens, ~in_base], dim=-1), q.dtype)
    spatial = tiled_attention(
        q[:, :, g:], k[:, :, g:], v[:, :, g:], plan, extra_k=k[:, :, rows], extra_v=v[:, :, rows],
        extra_bias=extra_bias, dropout_p=dropout_p,
    )
    dense = masked_attention(q[:, :, rows], k, v, dropout_p=dropout_p)
    source = torch.arange(g + n, device=q.device) - g
    source = torch.where(source < 0, source + g + n, source)
    source = source.scatter(0, gidx + g, n + g + torch.arange(len(idx), device=q.device))
    return torch.cat([spatial, dense], dim=2).index_select(2, source)


def _custom_mask(h: int, w: int, mask: torch.Tensor | Callable[[int, int], torch.Tensor] | None) -> torch.Tensor:
    """Validate a user mask: ``BoolTensor[N, N]`` (or a callable ``(h, w) -> mask``) with a True in every row."""
    mask = mask(h, w) if callable(mask) else mask
    n = h * w
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"custom mask must be a bool tensor (True = may attend), got {type(mask).__name__} "
                        f"{getattr(mask, 'dtype', '')}")
    if tuple(mask.shape) != (n, n):
        raise ValueError(f"custom mask shape {tuple(mask.shape)} does not match the {h}x{w} map: expected ({n}, {n})")
    empty = (~mask.any(-1)).nonzero().flatten()
    if empty.numel():
        raise ValueError(f"custom mask rows {empty[:10].tolist()} allow no key; every query must attend to one key")
    return mask


def _run_custom(spec, q, k, v, h, w, options, rel_pos_bias, dropout_p):
    """A mask tensor is a constant of a traced graph (one size); a callable ``(h, w) -> mask`` is traced with the
    symbolic size."""
    mask = options["mask"]
    mask = (mask(h, w) if callable(mask) else mask) if is_symbolic(h, w) else _custom_mask(h, w, mask)
    mask = mask.to(q.device)
    return masked_attention(q, k, v, mask=mask, dropout_p=dropout_p)


def mixed_groups(options: dict) -> list[tuple[PatternSpec, dict, int]]:
    """Resolve a ``mixed`` pattern into ``(spec, options, num_heads)`` groups, in head order.

    Shared options are given to each pattern that accepts them; ``options[name]`` overrides them per pattern.

    Args:
        options: Resolved ``mixed`` options (``heads``, ``options`` and shared pattern options).

    Returns:
        One entry per pattern in ``heads`` order.

    Examples:
        >>> [(s.name, n) for s, _, n in mixed_groups({"heads": {"local": 2, "axial": 1}, "options": None})]
        [('local', 2), ('axial', 1)]
    """
    per_pattern = options.get("options") or {}
    shared = {k: v for k, v in options.items() if k not in ("heads", "options")}
    unknown = sorted(set(per_pattern) - set(options["heads"]))
    if unknown:
        raise ValueError(f"options given for {unknown} which are not in heads={dict(options['heads'])}")
    groups = []
    for name, count in options["heads"].items():
        if name == "mixed":
            raise ValueError("heads= cannot contain 'mixed'")
        accepted = allowed_options(PATTERNS, canonical_name(PATTERNS, name), {})
        shared_here = {k: v for k, v in shared.items() if OPTION_ALIASES.get(k, k) in accepted}
        spec, sub = resolve(PATTERNS, name, {**shared_here, **per_pattern.get(name, {})})
        groups.append((spec, sub, count))
    return groups


def _mixed_pattern_mask(h: int, w: int, **options) -> torch.Tensor:
    masks = [spec.mask(h, w, **sub).expand(count, -1, -1) for spec, sub, count in mixed_groups(options)]
    return torch.cat(masks, dim=0)


def _run_mixed(spec, q, k, v, h, w, options, rel_pos_bias, dropout_p):
    groups, outs, start = mixed_groups(options), [], 0
    total = sum(count for _, _, count in groups)
    if not is_symbolic(h, w) and total != q.shape[1]:
        raise ValueError(f"heads={dict(options['heads'])} sums to {total} but the input has {q.shape[1]} heads")
    for sub_spec, sub, count in groups:
        part = slice(start, start + count)
        table = None if rel_pos_bias is None else rel_pos_bias[part]
        outs.append(sub_spec(q[:, part], k[:, part], v[:, part], h, w, sub, table, dropout_p))
        start += count
    return torch.cat(outs, dim=1)


def _neighbourhood_key(h, w, o):
    return "neighbourhood", (o["window"], o.get("dilation", 1), TILE)


def _band_key(h, w, o):
    return "band", (o["window"], o.get("dilation", 1), TILE)


for _spec in (
    PatternSpec("full", P.full_mask, run=_run_full, rel_pos=True),
    PatternSpec("local", P.local_mask, {"window": 7}, _neighbourhood_key, rel_pos=True),
    PatternSpec("dilated", P.dilated_mask, {"window": 7, "dilation": 2}, _neighbourhood_key, rel_pos=True),
    PatternSpec("local1d", P.local1d_mask, {"window": 3}, _band_key),
    PatternSpec("dilated1d", P.dilated1d_mask, {"window": 3, "dilation": 2}, _band_key),
    PatternSpec("window", P.window_mask, {"window": 7, "shift": False},
                lambda h, w, o: ("window", (o["window"], o["shift"])), rel_pos=True),
    PatternSpec("axial", P.axial_mask, run=_run_axial),
    PatternSpec("global", _global_pattern_mask, {"base": "local", "global_idx": (), "num_global_tokens": 0},
                run=_run_global, sub_patterns=lambda o: (o["base"],), flex_options=_global_flex_options),
    PatternSpec("custom", lambda h, w, mask: _custom_mask(h, w, mask), {"mask": None}, run=_run_custom),
    PatternSpec("mixed", _mixed_pattern_mask, {"heads": None, "options": None}, run=_run_mixed, rel_pos=True,
                sub_patterns=lambda o: tuple(o["heads"] or ())),
):
    register_pattern(_spec)


def _check_hw(hw: Any) -> tuple[Size, Size]:
    """Map size as Python ints; while tracing, traced sizes (0-d tensors under ``torch.jit.trace`` /
    ``torch.onnx.export``) stay tensors, so the index plans are computed inside the graph from the input's size."""
    if isinstance(hw, (tuple, list)) and len(hw) == 2:
        if symbolic_sizes() and all(isinstance(x, torch.Tensor) and x.dim() == 0 for x in hw):
            return tuple(hw)
        with graph_constants():  # a traced size under fixed_sizes() becomes a constant by design
            size = tuple(int(x) if isinstance(x, torch.Tensor) and x.numel() == 1 else x for x in hw)
        if all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in size):
            return size
    raise ValueError(f"hw={hw!r} must be a pair of positive ints (height, width)")


def _check_dilation(spec: PatternSpec, h: int, w: int, options: dict) -> None:
    """A 2-D dilated neighbourhood whose spacing reaches past the map on both axes leaves each query only itself."""
    dilation = options.get("dilation", 1)
    if spec.name == "dilated" and h * w > 1 and dilation >= max(h, w):
        raise ValueError(f"dilation={dilation} spans past the {h}x{w} map: every position would attend only to "
                         f"itself; use dilation < {max(h, w)} (or a larger image size)")


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: str = "full", *, hw: tuple[int, int], **options: Any
) -> torch.Tensor:
    """Multi-head attention of ``h*w`` tokens under a mask-defined pattern, via its exact fast path.

    Args:
        q: Queries ``[B, heads, N, d]`` with ``N = h*w`` tokens in row-major order (``N = G + h*w`` for
            ``global`` with ``num_global_tokens=G`` leading tokens).
        k: Keys, same layout as ``q``.
        v: Values ``[B, heads, N, dv]``.
        pattern: A name in :data:`PATTERNS` (or an alias such as ``"stride"``).
        hw: Token map size ``(h, w)``.
        **options: Pattern options (``window``, ``dilation``/``stride``, ``shift``, ``global_idx``,
            ``num_global_tokens``, ``base``, ``mask``, ``heads``, ``options``) and call options
            ``rel_pos_bias`` (``[heads, 2a-1, 2b-1]`` table indexed by ``(dy + a-1, dx + b-1)``, offsets clipped)
            and ``dropout_p`` (pass 0.0 in eval mode).

    Returns:
        ``[B, heads, N, dv]``.

    Examples:
        >>> q = k = v = torch.randn(1, 2, 80 * 80, 32)
        >>> attend(q, k, v, "local", hw=(80, 80), window=7).shape
        torch.Size([1, 2, 6400, 32])
    """
    options = dict(options)
    rel_pos_bias, dropout_p = options.pop("rel_pos_bias", None), float(options.pop("dropout_p", 0.0))
    spec, options = resolve(PATTERNS, pattern, options)
    if rel_pos_bias is not None and not spec.rel_pos:
        supported = sorted(name for name, s in PATTERNS.items() if s.rel_pos)
        raise ValueError(f"rel_pos_bias is not supported by pattern {spec.name!r}; supported: {supported}")
    h, w = _check_hw(hw)
    if not is_symbolic(h, w):  # traced graphs were validated by the eager run before the trace
        _check_inputs(spec, q, k, v, h, w, options, rel_pos_bias)
    return spec(q, k, v, h, w, options, rel_pos_bias, dropout_p)


def _check_inputs(spec: PatternSpec, q, k, v, h: int, w: int, options: dict, rel_pos_bias) -> None:
    """Shapes of ``q, k, v`` and of the relative bias table against the map size and the heads."""
    _check_dilation(spec, h, w, options)
    n = h * w + options.get("num_global_tokens", 0)
    if q.dim() != 4 or q.shape[2] != n or k.shape[:3] != q.shape[:3] or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"q, k, v of shapes {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)} do not match "
                         f"[B, heads, {n}, d] for hw={(h, w)}")
    if rel_pos_bias is not None and (rel_pos_bias.dim() != 3 or rel_pos_bias.shape[0] != q.shape[1]
                                     or rel_pos_bias.shape[1] % 2 == 0 or rel_pos_bias.shape[2] % 2 == 0):
        raise ValueError(f"rel_pos_bias shape {tuple(rel_pos_bias.shape)} must be [{q.shape[1]}, 2a-1, 2b-1]")


def pattern_mask(pattern: str, hw: tuple[int, int], **options: Any) -> torch.Tensor:
    """The specification mask of a pattern.

    Args:
        pattern: A name in :data:`PATTERNS` (or an alias).
        hw: Token map size ``(h, w)``.
        **options: Pattern options, as for :func:`attend` (call options are not accepted).

    Returns:
        ``BoolTensor[N, N]`` (True = may attend), ``[G+N, G+N]`` for ``global`` with ``num_global_tokens=G``,
        ``[heads, N, N]`` for ``mixed``.

    Examples:
        >>> pattern_mask("window", (13, 10), window=8, shift=True).shape
        torch.Size([130, 130])
    """
    spec, options = resolve(PATTERNS, pattern, options)
    h, w = _check_hw(hw)
    _check_dilation(spec, h, w, options)
    return spec.mask(h, w, **options)
