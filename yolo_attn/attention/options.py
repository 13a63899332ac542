"""Pattern-name and option resolution shared by :func:`~yolo_attn.attention.attend`, ``pattern_mask`` and
``Attention``: aliases, rejection of unknown names and options (listing the known ones), value checks."""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["TILE", "PATTERN_ALIASES", "OPTION_ALIASES", "CALL_OPTIONS", "resolve"]

#: Queries per tile along each axis for the tiled neighbourhood executor. Measured on 2 CPU threads at 80x80: 5 beat
#: 4, 6 and 8 by 5-15% for windows 3-11 (a 5x5 tile with a 7x7 window computes 121 keys per query, 8x8 computes 196).
TILE = 5
#: Alternative pattern names (the lectures call dilated attention "stride attention").
PATTERN_ALIASES = {"stride": "dilated", "stride1d": "dilated1d"}
#: Alternative option names.
OPTION_ALIASES = {"stride": "dilation", "window_size": "window"}
#: Options of the attention call itself, accepted by every pattern.
CALL_OPTIONS = ("rel_pos_bias", "dropout_p")


def _int_at_least(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an int >= {minimum}")
    return value


def _check_values(options: dict[str, Any]) -> dict[str, Any]:
    out = dict(options)
    for name, minimum in (("window", 1), ("dilation", 1), ("num_global_tokens", 0), ("area", 1)):
        if name in out:
            out[name] = _int_at_least(name, out[name], minimum)
    if "shift" in out:
        shift = out["shift"]
        if isinstance(shift, bool):
            out["shift"] = out["window"] // 2 if shift else 0
        else:
            out["shift"] = _int_at_least("shift", shift, 0)
    if "heads" in out:
        heads = out["heads"]
        if not isinstance(heads, Mapping) or not heads:
            raise TypeError(f"heads={heads!r} must be a non-empty dict pattern name -> number of heads")
        for name, count in heads.items():
            _int_at_least(f"heads[{name!r}]", count, 1)
    return out


def canonical_name(registry: Mapping[str, Any], pattern: str) -> str:
    """Resolve aliases and reject unknown pattern names (the message lists the known ones).

    Args:
        registry: Pattern registry (name -> spec).
        pattern: Requested name.

    Returns:
        The registered name.

    Examples:
        >>> canonical_name({"dilated": None}, "stride")
        'dilated'
    """
    name = PATTERN_ALIASES.get(pattern, pattern) if isinstance(pattern, str) else pattern
    if name not in registry:
        aliases = ", ".join(f"{a}->{b}" for a, b in PATTERN_ALIASES.items())
        raise ValueError(f"unknown attention pattern {pattern!r}; known patterns: {sorted(registry)} (aliases: {aliases})")
    return name


def allowed_options(registry: Mapping[str, Any], name: str, options: Mapping[str, Any]) -> set[str]:
    """Option names accepted by a pattern: its own defaults plus those of its sub-patterns (global base, mixed)."""
    spec = registry[name]
    allowed = set(spec.defaults)
    for sub in spec.sub_patterns({**spec.defaults, **options}):
        allowed |= allowed_options(registry, canonical_name(registry, sub), {})
    return allowed


def resolve(registry: Mapping[str, Any], pattern: str, options: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Validate a pattern name and its options.

    Args:
        registry: Pattern registry (name -> spec with ``defaults`` and ``sub_patterns``).
        pattern: Pattern name or alias.
        options: Pattern options (aliases allowed; call options such as ``dropout_p`` must be removed first).

    Returns:
        ``(spec, options)`` with defaults filled in and values normalised (``shift=True`` -> ``window // 2``).

    Raises:
        ValueError: Unknown pattern, bad option values.
        TypeError: Unknown options (the message lists the allowed ones).

    Examples:
        >>> from yolo_attn.attention import PATTERNS
        >>> resolve(PATTERNS, "stride", {"window_size": 5})[1]
        {'window': 5, 'dilation': 2}
    """
    name = canonical_name(registry, pattern)
    spec = registry[name]
    canon: dict[str, Any] = {}
    for key, value in options.items():
        key = OPTION_ALIASES.get(key, key)
        if key in canon:
            raise TypeError(f"option {key!r} given twice (directly and through an alias) for pattern {name!r}")
        canon[key] = value
    allowed = allowed_options(registry, name, canon)
    unknown = sorted(set(canon) - allowed)
    if unknown:
        raise TypeError(
            f"unknown option(s) {unknown} for attention pattern {name!r}; allowed: {sorted(allowed)} "
            f"(plus {list(CALL_OPTIONS)}; aliases: {OPTION_ALIASES})"
        )
    return spec, _check_values({**spec.defaults, **canon})
