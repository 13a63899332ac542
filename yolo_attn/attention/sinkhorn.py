"""Sinkhorn sorted-block attention (Sparse Sinkhorn Attention, Tay et al., 2020), exactly mask-defined.

The ``N = H * W`` row-major tokens are cut into ``nb = ceil(N / b)`` blocks of ``block_size = b`` (the tail block
padded; padded keys are masked). A small sorting network scores block pairs from block summaries (mean query of
block ``i`` vs mean key of block ``j``); Sinkhorn normalization in log space (``n_iters`` alternating row/column
log-softmax at ``temperature``) turns the ``[nb, nb]`` logits into a soft permutation ``P``.

Query block ``i`` attends the keys of its own block and of block ``j* = argmax_j P_ij`` (the union; if ``j* = i``
only its own block). The forward value is exactly dense attention under :func:`sinkhorn_mask`; for the sorting network
to learn, the picked block's values are multiplied by the straight-through factor ``P_ij* / P_ij*.detach()`` (1 in the
forward pass, so the output is unchanged). Cost ``O(N b)``, never an ``N x N`` tensor.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .kernel import batch_rows, mask_to_bias, masked_attention
from .modules import QKVAttentionBase

__all__ = ["SinkhornAttention", "sinkhorn_attention", "sinkhorn_mask", "log_sinkhorn", "block_summaries"]


def log_sinkhorn(logits: torch.Tensor, n_iters: int = 8, temperature: float = 0.75) -> torch.Tensor:
    """Sinkhorn normalization in log space: alternating row / column log-normalization of ``logits / temperature``.

    Computed in at least float32 (the result too; the ``[.., nb, nb]`` tensor is tiny): the entries of ``log P`` are
    of order ``log nb`` while the block choice depends on their differences, which at initialisation are ~1e-4. In
    float16 (resolution ~2e-3 at magnitude 4) the iterations' rounding alone decided the argmax: measured 9 of 216
    block choices flipped against float32 on random blocks, 0 to 1 with the normalization in float32.

    Args:
        logits: ``[..., nb, nb]`` block-to-block scores.
        n_iters: Number of (row, column) normalization rounds.
        temperature: Softness (> 0); lower is closer to a hard permutation.

    Returns:
        ``log P`` of the same shape, in at least float32; ``P = exp(log P)`` is (approximately) doubly stochastic.

    Examples:
        >>> log_sinkhorn(torch.randn(3, 3), n_iters=50).exp().sum(-2).allclose(torch.ones(3))
        True
    """
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    log_p = logits / temperature
    for _ in range(n_iters):
        log_p = log_p - torch.logsumexp(log_p, dim=-1, keepdim=True)
        log_p = log_p - torch.logsumexp(log_p, dim=-2, keepdim=True)
    return log_p


def block_summaries(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """Mean over the real (non-padding) tokens of each block: ``[B, h, N, d] -> [B, h, ceil(N / b), d]``."""
    n = x.shape[2]
    pad = -n % block_size
    sums = F.pad(x, (0, 0, 0, pad)).reshape(x.shape[0], x.shape[1], -1, block_size, x.shape[-1]).sum(dim=3)
    counts = F.pad(torch.ones(n, device=x.device, dtype=x.dtype), (0, pad)).reshape(-1, block_size).sum(-1)
    return sums / counts.unsqueeze(-1)


def sinkhorn_mask(choice: torch.Tensor, n: int, block_size: int) -> torch.Tensor:
    """The mask :func:`sinkhorn_attention` uses, densely: key in the query's block or in the block it picked.

    Args:
        choice: ``[B, h, nb]`` int, the block ``j*`` picked by each query block.
        n: Number of tokens ``N``.
        block_size: Block size ``b``.

    Returns:
        Bool ``[B, h, N, N]`` (True = may attend); the diagonal is always True.

    Examples:
        >>> sinkhorn_mask(torch.tensor([[[1, 1]]]), 3, 2)[0, 0].int().tolist()
        [[1, 1, 1], [1, 1, 1], [0, 0, 1]]
    """
    blk = torch.arange(n, device=choice.device) // block_size
    picked = choice[..., blk]  # [B, h, N]: the picked block of each query's block
    return (blk[:, None] == blk[None, :]) | (picked.unsqueeze(-1) == blk)


def sinkhorn_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_p: torch.Tensor,
    block_size: int,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query block attends its own block and the block ``argmax_j P_ij`` (straight-through on ``P``).

    Args:
        q: Queries ``[B, h, N, d]``.
        k: Keys ``[B, h, N, d]``.
        v: Values ``[B, h, N, dv]``.
        log_p: ``[B, h, nb, nb]`` log soft permutation (from :func:`log_sinkhorn`), ``nb = ceil(N / block_size)``.
        block_size: Block size ``b``; ``N`` is padded to ``nb * b`` and padded keys are masked.
        scale: Logit scale (default ``d ** -0.5``).
        dropout_p: Attention-weight dropout (pass 0.0 in eval).

    Returns:
        ``(out [B, h, N, dv], choice [B, h, nb])``; ``out`` equals dense attention under
        ``sinkhorn_mask(choice, N, block_size)`` and is differentiable w.r.t. ``log_p`` through the picked entries.

    Examples:
        >>> q = k = v = torch.randn(2, 4, 35, 16)
        >>> out, choice = sinkhorn_attention(q, k, v, torch.zeros(2, 4, 5, 5), 8)
        >>> out.shape, choice.shape
        (torch.Size([2, 4, 35, 16]), torch.Size([2, 4, 5]))
    """
    b, h, n, _ = q.shape
    pad = -n % block_size
    nb = (n + pad) // block_size
    if not torch.jit.is_tracing() and log_p.shape[-2:] != (nb, nb):
        raise ValueError(f"log_p.shape={tuple(log_p.shape)} must end with ({nb}, {nb}) for {n=}, {block_size=}")
    choice = log_p.argmax(dim=-1)  # [B, h, nb]
    st = log_p.gather(-1, choice.unsqueeze(-1)).to(v.dtype)  # [B, h, nb, 1]: the picked entries, in v's dtype
    st = torch.exp(st - st.detach())  # == 1 in value

    def blocks(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, 0, 0, pad)).reshape(b, h, nb, block_size, t.shape[-1])

    pick = batch_rows(choice, nb)  # [B * h * nb]

    def picked(t: torch.Tensor) -> torch.Tensor:  # [B, h, nb, b, d]: the block picked by each query block
        return t.reshape(-1, block_size, t.shape[-1]).index_select(0, pick).reshape(t.shape)

    qb, kb, vb = blocks(q), blocks(k), blocks(v)
    keys = torch.cat([kb, picked(kb)], dim=3)
    values = torch.cat([vb, picked(vb) * st.unsqueeze(-1)], dim=3)
    valid = torch.arange(nb * block_size, device=q.device).reshape(nb, block_size) < n  # [nb, b] real tokens
    own = valid.expand(b, h, nb, block_size)
    other = valid[choice] & (choice != torch.arange(nb, device=q.device)).unsqueeze(-1)  # no duplicate keys
    mask = torch.cat([own, other], dim=-1).unsqueeze(-2)  # [B, h, nb, 1, 2b]
    # an additive bias of the mask's (per-key) size: cheaper than filling the [B, h, nb, b, 2b] logits (ONNX Where)
    out = masked_attention(qb, keys, values, None, mask_to_bias(mask, q.dtype), scale, dropout_p)
    return out.reshape(b, h, nb * block_size, -1)[:, :, :n], choice


class SinkhornAttention(QKVAttentionBase):
    """Multi-head Sinkhorn sorted-block attention over ``[B, N, C]`` tokens.

    The sorting network is one Linear ``f`` on the head dim, shared by heads:
    ``logits_ij = f(mean q_i) . mean k_j / sqrt(d)`` (means over the real tokens of blocks ``i`` and ``j``).

    Args:
        dim: Channels ``C``.
        num_heads: Number of heads; must divide ``dim``.
        qkv_bias: Bias in the qkv projection.
        attn_drop: Attention-weight dropout (training only).
        proj_drop: Output dropout (training only).
        block_size: Tokens per block ``b`` (row-major, the last block padded).
        n_iters: Sinkhorn iterations.
        temperature: Sinkhorn temperature (> 0).

    Examples:
        >>> attn = SinkhornAttention(64, num_heads=4, block_size=8)
        >>> attn(torch.randn(2, 13 * 10, 64), (13, 10)).shape
        torch.Size([2, 130, 64])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        block_size: int = 16,
        n_iters: int = 8,
        temperature: float = 0.75,
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        if block_size < 1 or n_iters < 1:
            raise ValueError(f"{block_size=} and {n_iters=} must be positive integers")
        if temperature <= 0:
            raise ValueError(f"{temperature=} must be > 0")
        self.block_size, self.n_iters, self.temperature = block_size, n_iters, temperature
        self.sort_net = nn.Linear(self.head_dim, self.head_dim)

    def sort_logits(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Block-to-block logits ``[B, h, nb, nb]`` from block summaries of ``q, k: [B, h, N, d]``."""
        sq, sk = block_summaries(q, self.block_size), block_summaries(k, self.block_size)
        return torch.matmul(self.sort_net(sq), sk.transpose(-2, -1)) / math.sqrt(self.head_dim)

    def forward(
        self, x: torch.Tensor, hw: tuple[int, int], return_mask: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend.

        Args:
            x: Tokens ``[B, N, C]``, ``N = H * W`` row-major.
            hw: Feature map size ``(H, W)``.
            return_mask: Also return the mask actually used, bool ``[B, heads, N, N]`` (tests / small maps only).

        Returns:
            ``[B, N, C]``, or ``(out, mask)`` when ``return_mask``.
        """
        self.check_input(x, hw)
        q, k, v = self.split_heads(x)
        log_p = log_sinkhorn(self.sort_logits(q, k), self.n_iters, self.temperature)
        out, choice = sinkhorn_attention(q, k, v, log_p, self.block_size, self.scale, self.dropout_p)
        out = self.merge_heads(out)
        return (out, sinkhorn_mask(choice, x.shape[1], self.block_size)) if return_mask else out
