"""The one place where attention weights are computed: ``softmax(q k^T * scale + bias) v`` under a boolean mask.

Every attention path of the library (dense, tiled, windowed, clustered, sorted) reduces to calls of
:func:`masked_attention` on small dense blocks, so scaling, masking, numerically stable softmax and dropout are
implemented exactly once. :func:`batch_rows` is the one flat row index the gathering paths (clustering, Sinkhorn,
routing) use to pick rows per (batch, head) with ``index_select``.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

__all__ = ["attention_weights", "batch_rows", "joint_softmax", "mask_to_bias", "masked_attention"]


def mask_to_bias(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Turn a boolean "may attend" mask into an additive bias (0 where allowed, a large negative number elsewhere).

    A finite minimum is used instead of ``-inf`` so that a row with no allowed key (only ever a padding slot that
    is discarded afterwards) gives a uniform distribution instead of NaN.

    Args:
        mask: Boolean tensor, True = may attend.
        dtype: Floating dtype of the returned bias.

    Returns:
        Float tensor of the same shape as ``mask``.

    Examples:
        >>> mask_to_bias(torch.tensor([True, False])).tolist()[0]
        0.0
    """
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def batch_rows(index: torch.Tensor, rows) -> torch.Tensor:
    """Flat row numbers into ``x.reshape(B * h * rows, ...)`` for a per-(batch, head) row ``index [B, h, ...]``.

    ``x.reshape(-1, ...).index_select(0, batch_rows(index, rows))`` picks ``x[b, h, index[b, h, ...]]``; in exported
    graphs that is one ``Gather`` of whole rows, where ``gather`` with an index expanded over the feature dimension
    costs as much as the data itself.

    Examples:
        >>> batch_rows(torch.tensor([[[1, 0]], [[0, 0]]]), 3).tolist()
        [1, 0, 3, 3]
    """
    b, h = index.shape[:2]
    base = torch.arange(b * h, device=index.device).reshape(b, h, *([1] * (index.dim() - 2)))
    return (index + base * rows).flatten()


def masked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Scaled dot-product attention over the last two dimensions, computed explicitly.

    Args:
        q: Queries ``[..., Q, d]``.
        k: Keys ``[..., R, d]``.
        v: Values ``[..., R, dv]``.
        mask: Optional bool tensor broadcastable to ``[..., Q, R]``; True = may attend.
        bias: Optional float tensor broadcastable to ``[..., Q, R]`` added to the logits (relative position bias,
            or a precomputed mask bias from :func:`mask_to_bias`).
        scale: Logit scale; defaults to ``1 / sqrt(d)``.
        dropout_p: Dropout probability on the attention weights (pass 0.0 in eval mode).

    Returns:
        Tensor ``[..., Q, dv]``.

    Examples:
        >>> q = k = v = torch.randn(2, 4, 10, 8)
        >>> masked_attention(q, k, v).shape
        torch.Size([2, 4, 10, 8])
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale  # a traced head dim stays a tensor (no tracer warning)
    logits = torch.matmul(q * scale, k.transpose(-2, -1))
    weights = attention_weights(logits, mask=mask, bias=bias, dropout_p=dropout_p)
    return torch.matmul(weights.to(v.dtype), v)


def attention_weights(
    logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Masked, numerically stable softmax over the last dimension of precomputed (already scaled) logits.

    :func:`masked_attention` applies it to ``q k^T``; paths whose keys come in parts use :func:`joint_softmax`.

    Args:
        logits: Scaled logits ``[..., Q, R]``.
        mask: Optional bool tensor broadcastable to ``logits``; True = may attend.
        bias: Optional float tensor broadcastable to ``logits``, added before the softmax.
        dropout_p: Dropout probability on the weights (pass 0.0 in eval mode).

    Returns:
        Weights ``[..., Q, R]`` (rows sum to 1 before dropout), in at least float32 precision.

    Examples:
        >>> attention_weights(torch.zeros(1, 2)).tolist()
        [[0.5, 0.5]]
    """
    if bias is not None:
        logits = logits + bias.to(logits.dtype)
    if mask is not None:
        logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
    if (bias is not None or mask is not None) and torch.onnx.is_in_onnx_export():
        logits = _floor_logits(logits)
    # softmax in at least fp32: stable under bf16/fp16 autocast
    weights = torch.softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights


# exp(-40) = 4e-18 relative to the row's largest weight: ten orders below fp32 resolution even summed over thousands
# of slots, and large enough that its products with values stay normal floats down to |v| ~ 1e-20 (at exp(-80) the
# weighted sum of small values was itself denormal and slow).
_LOGIT_FLOOR = 40.0


def _floor_logits(logits: torch.Tensor) -> torch.Tensor:
    """Raise every logit to at least ``row max - 40`` (the form of :func:`attention_weights` in ONNX exports).

    ONNX Runtime's CPU softmax turns a masked slot (``finfo.min``, ``-inf``, anything below ``row max - 87``) into a
    denormal, and x86 computes with denormals many times slower: its softmax of a 60%-masked ``[256, 25, 121]`` tile
    tensor took 5.2 ms instead of 0.85 ms (1 thread); floored, softmax plus weighted sum take 0.53x the time. A
    masked slot then weighs ``exp(-40)`` relative to the row's largest weight instead of 0, so the weights agree to
    fp32 rounding (a row of only masked slots stays uniform). Only the ONNX exporter gets this form: OpenVINO
    (converted from the PyTorch trace, as ultralytics does) flushes denormals itself and would pay the extra reduction
    (1.19x on that fragment).
    """
    return torch.maximum(logits, logits.amax(-1, keepdim=True) - _LOGIT_FLOOR)


def joint_softmax(
    *logits: torch.Tensor,
    bias: tuple[torch.Tensor | None, ...] = (),
    dropout_p: float = 0.0,
) -> list[torch.Tensor]:
    """One softmax over several logit tensors' last dimensions together, without concatenating them.

    ``joint_softmax(a, b)`` equals ``softmax(cat([a, b], -1)).split([a.shape[-1], b.shape[-1]], -1)``; used where
    the keys of a query come in parts of different shape (axial attention's row and column). Building neither the
    concatenation nor a mask keeps it cheap in exported graphs (ONNX Runtime's broadcast ``Where`` and ``Concat``
    over ``[h, w, h + w]`` logits cost more than the softmax itself).

    Args:
        *logits: Scaled logits ``[..., Q, R_i]`` with the same leading dimensions.
        bias: Optional float tensor per part, broadcastable to it, added in the softmax's precision.
        dropout_p: Dropout probability on the weights (pass 0.0 in eval mode).

    Returns:
        The weights of each part, in at least float32 precision; together every row sums to 1 (before dropout).

    Examples:
        >>> a, b = joint_softmax(torch.zeros(1, 1), torch.zeros(1, 3))
        >>> a.tolist(), b.tolist()
        ([[0.25]], [[0.25, 0.25, 0.25]])
    """
    dtype = torch.promote_types(logits[0].dtype, torch.float32)  # at least fp32, as attention_weights
    bias = tuple(bias) + (None,) * (len(logits) - len(bias))
    parts = []
    for t, b in zip(logits, bias):
        parts.append(t.to(dtype) if b is None else t.to(dtype) + b.to(dtype))
    top = parts[0].amax(-1, keepdim=True)
    for t in parts[1:]:
        top = torch.maximum(top, t.amax(-1, keepdim=True))
    exps = []
    for t in parts:
        exps.append(torch.exp(t - top))
    total = exps[0].sum(-1, keepdim=True)
    for e in exps[1:]:
        total = total + e.sum(-1, keepdim=True)
    scale = total.reciprocal()
    weights = []
    for e in exps:
        weights.append(F.dropout(e * scale, p=dropout_p) if dropout_p > 0.0 else e * scale)
    return weights
