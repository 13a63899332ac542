"""Area attention (YOLO12): the map's row-major token sequence cut into ``area`` stripes, full attention inside each.

The specification is :func:`~yolo_attn.attention.patterns.area_mask` (token ``t`` in stripe ``t // ceil(N / area)``);
this module is its fast path, registered as the pattern ``"area"`` of :func:`~yolo_attn.attention.attend` (option
``area``, default 4 as in YOLO12) and used through :class:`~yolo_attn.attention.Attention`.

* ``N`` divisible by ``area`` (eager mode): a reshape to ``[B, heads * area, N / area, d]`` and one fused
  ``scaled_dot_product_attention``, no mask.
* Otherwise, and always while tracing / exporting: the sequence is padded at its end to ``area * c`` slots
  (``c = ceil(N / area)``; padded slots repeat the last token), padded keys are masked, and the padded queries are
  dropped. Only the token count ``N`` enters the computation, read from ``q``'s shape, so a traced or exported graph
  runs at any map size (not a constant of the graph).

Memory and time are ``O(N * N / area)``; no ``N x N`` tensor is built for ``area > 1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import patterns as P
from .functional import PatternSpec, register_pattern
from .kernel import masked_attention

__all__ = ["area_attention"]


def area_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, area: int = 4, dropout_p: float = 0.0
) -> torch.Tensor:
    """Attention within ``area`` consecutive stripes of the token sequence; equals dense attention under
    :func:`~yolo_attn.attention.patterns.area_mask`.

    Args:
        q: Queries ``[B, heads, N, d]`` (row-major tokens of the map).
        k: Keys ``[B, heads, N, d]``.
        v: Values ``[B, heads, N, dv]``.
        area: Number of stripes (>= 1).
        dropout_p: Attention-weight dropout (pass 0.0 in eval).

    Returns:
        ``[B, heads, N, dv]``.

    Examples:
        >>> q = k = v = torch.randn(1, 2, 10 * 8, 16)
        >>> area_attention(q, k, v, area=4).shape
        torch.Size([1, 2, 80, 16])
    """
    b, heads, n = q.shape[:3]
    if isinstance(n, int) and n % area == 0 and not torch.jit.is_tracing():
        split = [t.reshape(b, heads * area, n // area, t.shape[-1]) for t in (q, k, v)]  # 4-d: the fused kernel
        return F.scaled_dot_product_attention(*split, dropout_p=dropout_p).reshape(b, heads, n, v.shape[-1])
    c = P.area_length(n, area)
    slots = torch.arange(area * c, device=q.device)
    idx = slots.clamp(max=n - 1)
    valid = (slots < n).reshape(area, 1, c)  # [area, 1 (queries), c (keys)]
    qs, ks, vs = (t.index_select(2, idx).reshape(b, heads, area, c, t.shape[-1]) for t in (q, k, v))
    out = masked_attention(qs, ks, vs, mask=valid, dropout_p=dropout_p)
    return out.reshape(b, heads, area * c, v.shape[-1]).narrow(2, 0, n)


def _run_area(spec, q, k, v, h, w, options, rel_pos_bias, dropout_p):
    return area_attention(q, k, v, options["area"], dropout_p)


register_pattern(PatternSpec("area", P.area_mask, {"area": 4}, run=_run_area))
