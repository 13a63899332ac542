"""The one place where attention weights are computed: ``softmax(q k^T * scale + bias) v`` under a boolean mask.

Every attention path of the library (dense, tiled, windowed, clustered, sorted) reduces to calls of
:func:`masked_attention` on small dense blocks, so scaling, masking, numerically stable softmax and dropout are
implemented exactly once.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

__all__ = ["masked_attention", "mask_to_bias", "attention_weights"]


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

    Used directly by paths whose logits are not a single ``q k^T`` product (axial attention joins row and
    column logits in one softmax).

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
    # softmax in at least fp32: stable under bf16/fp16 autocast
    weights = torch.softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights
