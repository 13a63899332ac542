"""Validation of the YAML attention arguments ``(kind, options)`` of every block, and building what they name.

Kinds are the mask patterns of :data:`yolo_attn.attention.functional.PATTERNS` (aliases such as ``stride``
included) and the learned-pattern families of :data:`FAMILIES`. Errors are ``ValueError`` naming the argument and
the allowed values; the registration seam prefixes the layer index.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..attention.posenc import POS_ENCODINGS, build_pos_encoding

__all__ = ["BLOCK_OPTIONS", "FAMILIES", "PositionalEncoding", "attention_kinds", "build_attention", "canonical_kind"]

# kind -> (module of yolo_attn.attention, class); mask patterns all go through modules.Attention
FAMILIES = {
    "tokens": ("tokens", "GlobalTokenAttention"),
    "cluster": ("cluster", "ClusterAttention"),
    "sinkhorn": ("sinkhorn", "SinkhornAttention"),
    "linear": ("linear", "LinearAttention"),
    "reduce": ("reduce", "ReduceAttention"),
    "performer": ("performer", "PerformerAttention"),
    "routing": ("routing", "RoutingAttention"),
}
NOT_FROM_YAML = {"custom"}  # needs a mask tensor
BLOCK_OPTIONS = ("heads", "head_dim", "mlp_ratio", "pos", "e", "shortcut", "depth", "split", "layer_scale",
                 "qkv_bias", "attn_drop", "proj_drop")
POSITIVE_INTS = ("window", "dilation", "num_clusters", "block_size", "n_iters", "num_global_tokens", "head_dim")


def _core(name: str):
    return importlib.import_module(f"yolo_attn.attention.{name}")


def attention_kinds() -> tuple[str, ...]:
    """All attention kinds a YAML config may name: the core's mask patterns, then the learned families."""
    patterns = tuple(p for p in _core("functional").PATTERNS if p not in NOT_FROM_YAML)
    return patterns + tuple(FAMILIES)


def canonical_kind(kind: Any) -> str:
    """Resolve the core's pattern aliases (``stride`` -> ``dilated``); reject unknown kinds, listing the allowed."""
    kinds = attention_kinds()
    name = _core("options").PATTERN_ALIASES.get(kind, kind) if isinstance(kind, str) else kind
    if name not in kinds:
        close = difflib.get_close_matches(str(kind), kinds, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"attention kind {kind!r} is not one of {', '.join(kinds)}{hint}")
    return name


def _kind_options(kind: str, opts: Mapping) -> tuple[type, dict[str, Any], set[str]]:
    """``(class, fixed kwargs, allowed YAML options)`` of an attention kind (``opts`` matter for ``mixed``)."""
    if kind in FAMILIES:
        mod, name = FAMILIES[kind]
        cls, fixed = getattr(_core(mod), name), {}
        sig = inspect.signature(cls).parameters
        params = {n for n, p in sig.items() if p.kind != p.VAR_KEYWORD} - {"dim", "num_heads"}
        if "base" in sig and any(p.kind == p.VAR_KEYWORD for p in sig.values()):  # tokens: options of its base
            base = canonical_kind(opts.get("base", sig["base"].default))
            params |= _core("options").allowed_options(_core("functional").PATTERNS, base, {})
    else:
        cls, fixed = _core("modules").Attention, {"pattern": kind}
        params = {"qkv_bias", "attn_drop", "proj_drop"}
        params |= _core("options").allowed_options(_core("functional").PATTERNS, kind, dict(opts))
    return cls, fixed, params - {"rel_pos", "pattern", "heads"}


def _divisor_heads(dim: int, head_dim: int) -> int:
    """Largest divisor of ``dim`` that is at most ``dim // head_dim`` (at least 1)."""
    return max(h for h in range(1, max(dim // head_dim, 1) + 1) if dim % h == 0)


def build_attention(dim: int, kind: str = "full", options: Mapping | None = None) -> tuple[nn.Module, dict]:
    """Validate a YAML ``(kind, options)`` pair and build the token attention it names.

    Args:
        dim: Channels the attention runs on (``c_`` of the block at this model scale).
        kind: One of :func:`attention_kinds`.
        options: Block options (:data:`BLOCK_OPTIONS`) and options of ``kind``.

    Returns:
        ``(attention, block_options)``: a module with ``forward(x: [B, N, C], hw) -> [B, N, C]`` and the remaining
        block options (``mlp_ratio``, ``pos``, ``e`` and ``heads`` resolved to an int).

    Examples:
        >>> attn, rest = build_attention(64, "local", {"window": 7, "heads": 2})
        >>> attn(torch.randn(1, 25, 64), (5, 5)).shape, rest["heads"]
        (torch.Size([1, 25, 64]), 2)
    """
    kind = canonical_kind(kind)
    options = {} if options is None else options
    if not isinstance(options, Mapping):
        raise ValueError(f"options must be a mapping such as {{window: 7, heads: 4}}, got {options!r}")
    opts = dict(options)
    if kind == "mixed" and (not isinstance(opts.get("heads"), Mapping) or not opts["heads"]):
        raise ValueError(f"mixed needs heads as a mapping pattern -> count, e.g. {{local: 2, global: 1}}; got {opts.get('heads')!r}")
    cls, fixed, allowed = _kind_options(kind, opts)
    for key in opts:
        if key not in allowed and key not in BLOCK_OPTIONS:
            raise ValueError(
                f"unknown option {key!r} for {kind}; allowed: {', '.join(sorted(allowed))} "
                f"(attention) and {', '.join(o for o in BLOCK_OPTIONS if o not in allowed)} (block)"
            )
    for key in POSITIVE_INTS:
        if key in opts and (isinstance(opts[key], bool) or not isinstance(opts[key], int) or opts[key] < 1):
            raise ValueError(f"{key}={opts[key]!r} must be an int >= 1")
    if kind == "global" and opts.get("num_global_tokens"):  # extra tokens need embeddings: the tokens family
        raise ValueError(f"num_global_tokens={opts['num_global_tokens']!r} is not allowed for global (a mask over the "
                         "map's own positions: use global_idx); for learned global tokens use kind tokens")
    if "qkv_bias" in opts and not isinstance(opts["qkv_bias"], bool):
        raise ValueError(f"qkv_bias={opts['qkv_bias']!r} must be true or false")
    pos = opts.pop("pos", "cpe" if kind != "full" else "none")
    if pos not in POS_ENCODINGS:
        raise ValueError(f"pos={pos!r} is not one of {', '.join(POS_ENCODINGS)}")
    rel_kinds = [k for k, spec in _core("functional").PATTERNS.items() if spec.rel_pos]
    if pos == "rel" and kind not in rel_kinds:
        raise ValueError(f"pos='rel' is supported for {', '.join(rel_kinds)}; for {kind} use none, sincos, learned or cpe")
    heads = opts.pop("heads", None)
    head_dim = opts.pop("head_dim", 32)
    if kind == "mixed":
        fixed = {**fixed, "heads": dict(heads)}
        heads = sum(heads.values())
    elif heads is None:
        heads = _divisor_heads(dim, head_dim)
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1 or dim % heads:
        raise ValueError(
            f"heads={heads!r} does not divide the {dim} attention channels at this layer and scale "
            f"(e * c2, times split where given); use a divisor of {dim}, or head_dim: N to derive heads per scale"
        )
    rest = {k: opts.pop(k) for k in ("mlp_ratio", "e") if k in opts}
    if pos == "rel":
        fixed = {**fixed, "rel_pos": True}
    try:
        attn = cls(dim, heads, **fixed, **opts)
    except TypeError as err:
        raise ValueError(f"invalid options {opts} for {kind}: {err}; allowed: {', '.join(sorted(allowed))}") from err
    return attn, {"heads": heads, "pos": pos, **rest}


class PositionalEncoding(nn.Module):
    """The ``pos`` option of a block applied to a feature map about to become tokens.

    ``cpe`` is a depthwise conv on the map (:meth:`map`); ``sincos`` / ``learned`` are added to the tokens
    (:meth:`tokens`); ``rel`` lives inside the attention (a bias), ``none`` does nothing: both are identities here.

    Args:
        kind: One of :data:`~yolo_attn.attention.posenc.POS_ENCODINGS`.
        dim: Channels.
        num_heads: Attention heads (for ``rel``; unused here).

    Examples:
        >>> pe = PositionalEncoding("sincos", 32, 2)
        >>> pe.tokens(pe.map(torch.zeros(1, 32, 4, 5)).flatten(2).transpose(1, 2), (4, 5)).shape
        torch.Size([1, 20, 32])
    """

    def __init__(self, kind: str, dim: int, num_heads: int) -> None:
        super().__init__()
        self.kind = kind
        self.pe = build_pos_encoding(kind, dim, num_heads) if kind in ("cpe", "sincos", "learned") else nn.Identity()

    def map(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` with the conditional encoding applied (``cpe``), else unchanged."""
        return self.pe(x) if self.kind == "cpe" else x

    def tokens(self, t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """``[B, N, C]`` plus the absolute embedding (``sincos`` / ``learned``), else unchanged."""
        return t + self.pe(tuple(hw)).to(t.dtype) if self.kind in ("sincos", "learned") else t
