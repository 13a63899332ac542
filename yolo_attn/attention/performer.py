"""Performer attention: FAVOR+ positive orthogonal random features (Choromanski et al., 2021).

The softmax kernel ``exp(q . k / sqrt(d))`` is approximated, without bias, by an inner product of positive random
features. With ``x' = x / d^(1/4)`` and ``m`` random directions ``w_1 .. w_m`` (rows of ``projection``):

    phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m),        E[phi(q) . phi(k)] = exp(q . k / sqrt(d))

and attention becomes ``out_i = phi(q_i) (sum_j phi(k_j)^T v_j) / (phi(q_i) . sum_j phi(k_j))``: ``O(N m d)`` time,
no ``N x N`` tensor, no mask. The directions are *orthogonal* (blocks of ``d`` rows from the QR factor of a Gaussian
matrix, each row rescaled to the norm of a Gaussian vector), which lowers the variance. The error against exact
softmax attention falls as ``m`` grows (roughly as ``1 / sqrt(m)``).

Numerical stability: the exponents are stabilised so that nothing overflows or underflows to ``0 / 0``. Each key
feature ``f`` is divided by its maximum over the keys, ``exp(c_f)``, and that factor is moved into the query
features, which are then divided by their own maximum over ``f``. Both factors cancel exactly in the normalised
output (they are detached: gradients are those of the plain formula), and every normaliser is at least 1 (the
query's largest feature is 1 and that feature's largest key term is 1), even for inputs of magnitude 1e3.
Computed in at least float32.

Feature redraw policy (:class:`PerformerAttention`): the features are drawn at construction from ``seed``. With
``redraw=0`` (default) they never change. With ``redraw=k`` they are redrawn after every ``k``-th training forward
pass: a persistent ``step`` buffer counts the training passes and the features in use are always draw
``step // k``, where draw ``i`` comes from the generator seeded ``seed + 1000003 * i`` (reproducible runs; every DDP
rank draws the same). Evaluation never redraws: eval and exported graphs are deterministic, the features being
constants of the graph. The features are a non-persistent buffer: not in ``state_dict`` (so never averaged by
ultralytics' EMA), rebuilt from ``seed`` and ``step`` when a state dict is loaded; a copy that only evaluates (the EMA
model) keeps the features it has. A redraw rebinds the buffer, never writes into a tensor saved for backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .modules import QKVAttentionBase

__all__ = ["PerformerAttention", "favor_features", "orthogonal_features", "performer_attention"]

#: Seed stride between redraws (a prime, so draws of nearby seeds do not coincide).
SEED_STRIDE = 1_000_003


def orthogonal_features(
    num_features: int, head_dim: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random directions ``[num_features, head_dim]``: orthogonal within each block of ``head_dim`` rows.

    Each block is the Q factor of a Gaussian ``d x d`` matrix (signs fixed by ``R``'s diagonal, so it is Haar
    distributed); each row is then scaled to the norm of an independent Gaussian vector, so every row is marginally
    Gaussian as FAVOR+ requires.

    Args:
        num_features: Number of features ``m`` (any positive int; the last block is truncated).
        head_dim: Dimension ``d`` of queries and keys.
        generator: Random generator (None: the global one).

    Returns:
        Float32 ``[m, d]``.

    Examples:
        >>> w = orthogonal_features(8, 4, torch.Generator().manual_seed(0))
        >>> w.shape, bool((w[:4] @ w[:4].T).triu(1).abs().max() < 1e-4)
        (torch.Size([8, 4]), True)
    """
    blocks = []
    for _ in range(-(-num_features // head_dim)):
        q, r = torch.linalg.qr(torch.randn(head_dim, head_dim, generator=generator))
        blocks.append((q * torch.sign(torch.diagonal(r))).T)
    norms = torch.randn(num_features, head_dim, generator=generator).norm(dim=1, keepdim=True)
    return torch.cat(blocks)[:num_features] * norms


def favor_features(
    q: torch.Tensor, k: torch.Tensor, projection: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stabilised positive features of queries and keys, ``exp(W x' - |x'|^2 / 2)`` up to factors that cancel.

    The ``1 / sqrt(m)`` factor cancels in the normalised output and is left out; the stabilisers are described in
    the module doc. A query's ``exp(-|q'|^2 / 2)`` is one factor over all its features, which its own stabiliser
    (the maximum over the features) cancels: it is never computed. The key features come feature-major
    (``[m, M]`` per head), so the maximum over the keys and the product with the values run along contiguous rows
    (in ONNX Runtime, reductions over the token axis of ``[M, m]`` cost as much as the feature map itself).

    Args:
        q: Queries ``[B, heads, N, d]`` (any float dtype; computed in the dtype of ``projection``).
        k: Keys ``[B, heads, M, d]``.
        projection: ``[m, d]`` random directions.

    Returns:
        ``(phi_q [B, heads, N, m], phi_k [B, heads, m, M])``, values in ``[0, 1]``; each query row and each key
        feature row has a maximum of exactly 1.

    Examples:
        >>> phi_q, phi_k = favor_features(torch.randn(1, 2, 5, 4), torch.randn(1, 2, 6, 4), torch.randn(8, 4))
        >>> phi_q.amax(-1).unique().tolist(), phi_k.amax(-1).unique().tolist()
        ([1.0], [1.0])
    """
    scale = q.shape[-1] ** -0.25  # x' = x / d^(1/4), folded into the directions and the norm term
    w = projection * scale
    k = k.to(projection.dtype)
    logits_k = w @ k.transpose(-2, -1) - k.square().sum(-1).unsqueeze(-2) * (scale * scale / 2)  # [B, h, m, M]
    c = logits_k.amax(-1, keepdim=True).detach()  # [B, heads, m, 1]: per-feature key maximum
    logits_q = q.to(projection.dtype) @ w.T + c.transpose(-2, -1)  # the keys' maxima moved into the queries: cancel
    return torch.exp(logits_q - logits_q.amax(-1, keepdim=True).detach()), torch.exp(logits_k - c)


def performer_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, projection: torch.Tensor
) -> torch.Tensor:
    """FAVOR+ attention ``phi(q) (phi(k)^T v) / (phi(q) . sum_j phi(k_j))`` in ``O(N m d)``.

    The normaliser comes out of the same product as the numerator: the values get a column of ones, so
    ``phi(q) (phi(k)^T [v, 1])`` holds both (one matrix product instead of a reduction over the keys and a second
    product).

    Args:
        q: Queries ``[B, heads, N, d]``.
        k: Keys ``[B, heads, M, d]``.
        v: Values ``[B, heads, M, dv]``.
        projection: ``[m, d]`` random directions (see :func:`orthogonal_features`); computed in at least float32.

    Returns:
        ``[B, heads, N, dv]`` in the dtype of ``v``.

    Examples:
        >>> q = k = v = torch.randn(2, 4, 35, 16)
        >>> performer_attention(q, k, v, orthogonal_features(64, 16)).shape
        torch.Size([2, 4, 35, 16])
    """
    dtype = torch.promote_types(torch.promote_types(v.dtype, projection.dtype), torch.float32)
    projection = projection.to(dtype)
    phi_q, phi_k = favor_features(q, k, projection)
    kv = phi_k @ F.pad(v.to(dtype), (0, 1), value=1.0)  # [B, h, m, dv + 1]: the last column is sum_j phi(k_j)
    out = phi_q @ kv  # [B, h, N, dv + 1]; its last column, the normaliser, is >= 1 by the stabilisers
    return (out[..., :-1] / out[..., -1:]).to(v.dtype)


class PerformerAttention(QKVAttentionBase):
    """Multi-head Performer (FAVOR+) attention over ``[B, N, C]`` tokens: softmax attention approximated in ``O(N)``.

    Args:
        dim: Channels ``C``.
        num_heads: Number of heads; must divide ``dim``.
        qkv_bias: Bias in the qkv projection.
        attn_drop: Must be 0.0: FAVOR+ never forms attention weights to drop.
        proj_drop: Output dropout (training only).
        num_features: Random features ``m`` (shared by the heads).
        redraw: Redraw the features every ``redraw`` training forward passes; 0 = never (see the module doc).
        seed: Seed of the features.

    Examples:
        >>> attn = PerformerAttention(64, num_heads=2, num_features=32)
        >>> attn(torch.randn(2, 5 * 7, 64), (5, 7)).shape
        torch.Size([2, 35, 64])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        num_features: int = 64,
        redraw: int = 0,
        seed: int = 0,
    ) -> None:
        if attn_drop != 0.0:
            raise ValueError(f"{attn_drop=} is not supported by PerformerAttention (no attention weights); allowed: 0.0")
        for name, value, minimum in (("num_features", num_features, 1), ("redraw", redraw, 0), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name}={value!r} must be an int >= {minimum}")
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.num_features, self.redraw, self.seed = num_features, redraw, seed
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("projection", self.draw(0), persistent=False)

    def draw(self, index: int) -> torch.Tensor:
        """Features of draw ``index`` (0 = at construction): ``[num_features, head_dim]``, deterministic."""
        return orthogonal_features(
            self.num_features, self.head_dim, torch.Generator().manual_seed(self.seed + SEED_STRIDE * index)
        )

    def _use_current_draw(self) -> None:
        """Rebind ``projection`` to draw ``step // redraw`` (draw 0 without redraws), keeping its device and dtype."""
        index = int(self.step) // self.redraw if self.redraw else 0
        self.projection = self.draw(index).to(self.projection)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._use_current_draw()  # features follow the loaded step

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Attend; in training with ``redraw > 0`` then count the pass (and redraw after every ``redraw``-th).

        Args:
            x: Tokens ``[B, N, C]``, ``N = H * W`` row-major.
            hw: Feature map size ``(H, W)`` (only validated: the attention is position-free).

        Returns:
            ``[B, N, C]``.
        """
        self.check_input(x, hw)
        q, k, v = self.split_heads(x)
        out = self.merge_heads(performer_attention(q, k, v, self.projection))
        if self.training and self.redraw:
            with torch.no_grad():
                self.step += 1
            if int(self.step) % self.redraw == 0:
                self._use_current_draw()
        return out

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, num_features={self.num_features}, "
                f"redraw={self.redraw}, seed={self.seed}")
