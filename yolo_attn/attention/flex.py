"""FlexAttention backend of the mask patterns on CUDA, and the per-pattern table of which backend CUDA uses.

``torch.nn.attention.flex_attention`` runs exact attention under a ``BlockMask`` in one fused (Triton) kernel that
skips fully masked blocks. Each pattern's ``mask_mod`` here is built from the *same* elementwise predicates as its
specification in :mod:`yolo_attn.attention.patterns` (``axis_neighbourhood``, ``axis_window``, ``band``, ...), so the
flex path is exact by construction and tested against the float64 reference like the tiled executor. A relative
position bias becomes a ``score_mod`` that indexes the table with the same clipped offsets as
:func:`~yolo_attn.attention.functional.relative_position_bias`.

Block masks are cached per ``(pattern, options, h, w, device)``; the compiled kernel per shape and dtype
(``torch.compile(..., dynamic=False)`` specialises on both). The first call of each ``(pattern, options, size,
dtype, device, shape)`` is timed apart: :data:`COMPILE_SECONDS`.

Dispatch (:func:`choose_backend`): :func:`~yolo_attn.attention.functional.attend` asks for the backend of a pattern
before running its fast path. Flex runs only on CUDA tensors, outside tracing / export (which keep the traceable
tiled path), without attention dropout (flex has none), for a pattern :data:`FLEX_PATTERNS` supports, and when
the table says ``"flex"``. CPU always keeps the tiled path (FlexAttention has no CPU backward).

The table :data:`CUDA_BACKEND` defaults to ``"tiled"`` (the pattern's own fast path: the tiled executor; fused SDPA
for ``full``; the joint row/column softmax for ``axial``) for every pattern: it has **not been measured yet**.
``yolo-attn bench gpu part=kernels`` prints the measured winner per pattern; write it here. Users override it with
:func:`set_cuda_backend` / :func:`use_cuda_backend`, or the environment variable ``YOLO_ATTN_CUDA_BACKEND``
(``flex``, ``tiled``, or ``local=flex,window=tiled``), read when this module is imported.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from . import patterns as P

__all__ = [
    "BACKENDS",
    "COMPILE_SECONDS",
    "CUDA_BACKEND",
    "FLEX_PATTERNS",
    "choose_backend",
    "cuda_backend_table",
    "flex_attend",
    "flex_block_mask",
    "flex_mask_mod",
    "set_cuda_backend",
    "use_cuda_backend",
]

BACKENDS = ("tiled", "flex")
#: CUDA backend per pattern; NOT MEASURED YET, so every pattern keeps the tiled path. Fill in the winners that
#: ``yolo-attn bench gpu part=kernels`` prints (benchmarks/gpu.md).
CUDA_BACKEND: dict[str, str] = {
    "full": "tiled", "local": "tiled", "dilated": "tiled", "local1d": "tiled", "dilated1d": "tiled",
    "window": "tiled", "axial": "tiled", "global": "tiled",
}
ENV_VAR = "YOLO_ATTN_CUDA_BACKEND"
#: Seconds spent in the first (compiling) forward call per key; see the module docstring.
COMPILE_SECONDS: dict[tuple, float] = {}

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------------------------------ mask mods
def _neighbourhood(h: int, w: int, options: dict) -> MaskMod:
    window, dilation = options["window"], options.get("dilation", 1)

    def mask_mod(b, head, q, k):
        return (P.axis_neighbourhood(q // w, k // w, h, window, dilation)
                & P.axis_neighbourhood(q % w, k % w, w, window, dilation))

    return mask_mod


def _band(h: int, w: int, options: dict) -> MaskMod:
    window, dilation = options["window"], options.get("dilation", 1)
    return lambda b, head, q, k: P.band(q, k, window, dilation)


def _window(h: int, w: int, options: dict) -> MaskMod:
    (wy, sy), (wx, sx) = P.window_shift(h, options["window"], options["shift"]), P.window_shift(
        w, options["window"], options["shift"])
    return lambda b, head, q, k: P.axis_window(q // w, k // w, wy, sy) & P.axis_window(q % w, k % w, wx, sx)


def _axial(h: int, w: int, options: dict) -> MaskMod:
    return lambda b, head, q, k: (q // w == k // w) | (q % w == k % w)


def _global(h: int, w: int, options: dict) -> MaskMod:
    """options: the base's canonical name and resolved options beside the global ones (``PatternSpec.flex_options``)."""
    own = ("base", "global_idx", "num_global_tokens")
    base = options["base"]
    if base not in _MASK_MODS or base == "global":
        raise ValueError(f"flex: global attention over base={base!r} is not supported")
    base_mod = _MASK_MODS[base](h, w, {k: v for k, v in options.items() if k not in own})
    g, n = options["num_global_tokens"], h * w
    special = torch.zeros(g + n, dtype=torch.bool)
    special[:g] = True
    special[torch.as_tensor(options["global_idx"], dtype=torch.long).reshape(-1) + g] = True

    def mask_mod(b, head, q, k):
        table = special.to(q.device)
        qs, ks = q - g, k - g
        spatial = (qs >= 0) & (ks >= 0) & base_mod(b, head, qs.clamp(min=0), ks.clamp(min=0))
        return spatial | table[q] | table[k]

    return mask_mod


_MASK_MODS: dict[str, Callable[[int, int, dict], MaskMod | None]] = {
    "full": lambda h, w, options: None,
    "local": _neighbourhood,
    "dilated": _neighbourhood,
    "local1d": _band,
    "dilated1d": _band,
    "window": _window,
    "axial": _axial,
    "global": _global,
}
#: Patterns with a flex path (``mixed`` runs each of its head groups through its own pattern's backend).
FLEX_PATTERNS = tuple(_MASK_MODS)


def flex_mask_mod(pattern: str, hw: tuple[int, int], options: Mapping[str, Any]) -> MaskMod | None:
    """The ``mask_mod(b, head, q_idx, kv_idx) -> bool`` of a pattern (None for ``full``), from its spec predicates.

    Args:
        pattern: A name in :data:`FLEX_PATTERNS`.
        hw: Map size ``(h, w)``; token ``t = y * w + x`` (``global`` with ``G`` tokens: ``G`` leading tokens).
        options: Resolved pattern options (as :func:`~yolo_attn.attention.options.resolve` returns them).

    Returns:
        The mask function, vectorised by FlexAttention over index tensors.

    Examples:
        >>> mod = flex_mask_mod("local", (5, 5), {"window": 3})
        >>> bool(mod(0, 0, torch.tensor(12), torch.tensor(6)))
        True
    """
    if pattern not in _MASK_MODS:
        raise ValueError(f"pattern {pattern!r} has no FlexAttention path; supported: {FLEX_PATTERNS}")
    return _MASK_MODS[pattern](hw[0], hw[1], dict(options))


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


@functools.lru_cache(maxsize=128)
def _block_mask(pattern: str, h: int, w: int, frozen: tuple, n: int, device: torch.device):
    from torch.nn.attention.flex_attention import create_block_mask

    mask_mod = flex_mask_mod(pattern, (h, w), dict(frozen))
    return None if mask_mod is None else create_block_mask(mask_mod, None, None, n, n, device=device)


def flex_block_mask(pattern: str, hw: tuple[int, int], options: Mapping[str, Any], device: torch.device | str):
    """The cached ``BlockMask`` of a pattern (None for ``full``), built from :func:`flex_mask_mod`.

    Args:
        pattern: A name in :data:`FLEX_PATTERNS`.
        hw: Map size ``(h, w)``.
        options: Resolved pattern options.
        device: Device of the block mask (that of ``q``).

    Returns:
        ``torch.nn.attention.flex_attention.BlockMask`` or None.
    """
    h, w = hw
    n = h * w + options.get("num_global_tokens", 0)
    return _block_mask(pattern, h, w, _freeze(options), n, torch.device(device))


# ---------------------------------------------------------------------------------------------------- the kernel
def _attend(q, k, v, block_mask, table, w: int, extent: tuple[int, int]):
    """flex_attention with an optional relative position bias ``table [heads, 2a-1, 2b-1]`` as a score_mod."""
    from torch.nn.attention.flex_attention import flex_attention

    if table is None:
        return flex_attention(q, k, v, block_mask=block_mask)
    a, b = extent

    def score_mod(score, batch, head, qi, ki):
        dy = (qi // w - ki // w).clamp(1 - a, a - 1) + a - 1
        dx = (qi % w - ki % w).clamp(1 - b, b - 1) + b - 1
        return score + table[head, dy, dx]

    return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask)


@functools.cache
def _compiled_attend() -> Callable:
    return torch.compile(_attend, dynamic=False)


#: Specialisations of the one compiled kernel allowed per process (dynamo's default of 8 per code object would
#: silently fall back to eager flex after 8 pattern / size / dtype combinations).
RECOMPILE_LIMIT = 256


def _recompile_limit():
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    return config.patch(**{name: max(getattr(config, name), RECOMPILE_LIMIT)})


_FAILED: set[tuple] = set()


def flex_attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: str,
    hw: tuple[int, int],
    options: Mapping[str, Any],
    rel_pos_bias: torch.Tensor | None = None,
    compile: bool = True,
) -> torch.Tensor:
    """Attention of ``[B, heads, N, d]`` tensors under a pattern with FlexAttention (exact; no dropout).

    Args:
        q: Queries ``[B, heads, N, d]``.
        k: Keys, same layout.
        v: Values ``[B, heads, N, dv]``.
        pattern: A name in :data:`FLEX_PATTERNS`.
        hw: Map size ``(h, w)``.
        options: Resolved pattern options.
        rel_pos_bias: Optional ``[heads, 2a-1, 2b-1]`` relative position table (``full``, ``local``, ``dilated``,
            ``window``).
        compile: Run the ``torch.compile``-d kernel (the fast path; CUDA). ``False`` runs flex_attention eagerly
            (a dense reference implementation; forward only on CPU) -- for tests.

    Returns:
        ``[B, heads, N, dv]``.

    Examples:
        >>> q = torch.randn(1, 2, 25, 16)
        >>> flex_attend(q, q, q, "local", (5, 5), {"window": 3}, compile=False).shape
        torch.Size([1, 2, 25, 16])
    """
    h, w = hw
    block_mask = flex_block_mask(pattern, hw, options, q.device)
    table = None if rel_pos_bias is None else rel_pos_bias.to(q.dtype)
    extent = (0, 0) if table is None else ((table.shape[1] + 1) // 2, (table.shape[2] + 1) // 2)
    if not compile:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "flex_attention called without torch.compile()": intended here
            return _attend(q, k, v, block_mask, table, w, extent)
    key = (pattern, _freeze(options), h, w, q.dtype, q.device, tuple(q.shape), v.shape[-1], table is not None)
    if key in COMPILE_SECONDS:
        with _recompile_limit():
            return _compiled_attend()(q, k, v, block_mask, table, w, extent)
    if q.is_cuda:
        torch.cuda.synchronize(q.device)
    start = time.perf_counter()
    with _recompile_limit():
        out = _compiled_attend()(q, k, v, block_mask, table, w, extent)
    if q.is_cuda:
        torch.cuda.synchronize(q.device)
    COMPILE_SECONDS[key] = time.perf_counter() - start
    return out


# ---------------------------------------------------------------------------------------------- the backend table
def _parse_table(text: str) -> dict[str, str]:
    """``"flex"`` / ``"tiled"`` (every pattern) or ``"local=flex,window=tiled"`` -> a partial table."""
    text = text.strip()
    if not text:
        return {}
    if "=" not in text:
        return dict.fromkeys(CUDA_BACKEND, _check_backend(text, ENV_VAR))
    table = {}
    for item in text.split(","):
        name, _, backend = item.partition("=")
        table[_check_pattern(name.strip())] = _check_backend(backend.strip(), f"{ENV_VAR} {name.strip()}")
    return table


def _check_backend(backend: Any, what: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"{what}={backend!r} is not a CUDA attention backend; allowed: {', '.join(BACKENDS)}")
    return backend


def _check_pattern(name: Any) -> str:
    if name not in CUDA_BACKEND:
        raise ValueError(f"pattern {name!r} has no CUDA backend choice; patterns: {', '.join(CUDA_BACKEND)}")
    return name


_OVERRIDES: dict[str, str] = {}
try:
    _ENV_TABLE = _parse_table(os.environ.get(ENV_VAR, ""))
except ValueError as _err:  # a bad environment variable must not make the package unimportable
    warnings.warn(f"yolo_attn: ignoring {ENV_VAR}: {_err}", stacklevel=1)
    _ENV_TABLE = {}


def cuda_backend_table() -> dict[str, str]:
    """The effective table: :data:`CUDA_BACKEND`, then ``$YOLO_ATTN_CUDA_BACKEND``, then :func:`set_cuda_backend`.

    Examples:
        >>> cuda_backend_table()["local"] in BACKENDS
        True
    """
    return {**CUDA_BACKEND, **_ENV_TABLE, **_OVERRIDES}


def set_cuda_backend(backend: str | Mapping[str, str] | None) -> dict[str, str]:
    """Choose the CUDA backend of every pattern (``"flex"`` / ``"tiled"``) or of some (``{"local": "flex"}``).

    Args:
        backend: A backend for all patterns, a mapping pattern -> backend, or None to drop every override.

    Returns:
        The overrides in force before the call (pass them back to restore).

    Examples:
        >>> before = set_cuda_backend({"local": "flex"})
        >>> cuda_backend_table()["local"]
        'flex'
        >>> _ = set_cuda_backend(before or None)
    """
    before = dict(_OVERRIDES)
    if backend is None:
        _OVERRIDES.clear()
    elif isinstance(backend, Mapping):
        _OVERRIDES.update({_check_pattern(k): _check_backend(v, k) for k, v in backend.items()})
    else:
        _OVERRIDES.update(dict.fromkeys(CUDA_BACKEND, _check_backend(backend, "backend")))
    return before


@contextlib.contextmanager
def use_cuda_backend(backend: str | Mapping[str, str]) -> Iterator[None]:
    """Context manager form of :func:`set_cuda_backend` that restores the previous overrides on exit.

    Examples:
        >>> with use_cuda_backend("flex"):
        ...     cuda_backend_table()["window"]
        'flex'
    """
    before = set_cuda_backend(backend)
    try:
        yield
    finally:
        _OVERRIDES.clear()
        _OVERRIDES.update(before)


def _tracing() -> bool:
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export() or exporting()


def choose_backend(pattern: str, q: torch.Tensor, dropout_p: float = 0.0) -> str:
    """The backend :func:`~yolo_attn.attention.attend` uses for ``pattern`` on ``q``'s device.

    ``"flex"`` only on CUDA, outside tracing / export, without dropout, for a pattern of :data:`FLEX_PATTERNS`
    whose entry in :func:`cuda_backend_table` is ``"flex"``; otherwise ``"tiled"``.

    Args:
        pattern: Registered pattern name.
        q: The queries (their device decides).
        dropout_p: Attention dropout probability of the call.

    Returns:
        ``"flex"`` or ``"tiled"``.

    Examples:
        >>> choose_backend("local", torch.zeros(1))
        'tiled'
    """
    if not q.is_cuda or dropout_p > 0.0 or pattern not in _MASK_MODS or _tracing():
        return "tiled"
    return cuda_backend_table().get(pattern, "tiled")


def run_flex(pattern: str, q, k, v, h: int, w: int, options: dict, rel_pos_bias) -> torch.Tensor | None:
    """The dispatch hook's flex call: :func:`flex_attend`, or None (caller runs the tiled path) if flex fails for
    this key (warned once per key; e.g. a head dimension the kernel does not support)."""
    key = (pattern, _freeze(options), q.dtype, q.shape[-1])
    if key in _FAILED:
        return None
    try:
        return flex_attend(q, k, v, pattern, (h, w), options, rel_pos_bias)
    except Exception as err:  # noqa: BLE001  (any compile / kernel failure falls back to the exact tiled path)
        _FAILED.add(key)
        warnings.warn(f"yolo_attn: FlexAttention failed for {pattern!r} {options} ({type(err).__name__}: "
                      f"{str(err).strip().splitlines()[0][:200] if str(err).strip() else ''}); using the tiled path",
                      stacklevel=2)
        return None
