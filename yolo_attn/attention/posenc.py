"""Positional encodings for ``H x W`` token maps (row-major ``t = y * W + x``).

- :func:`sincos_2d` / :class:`SinCosPosEmbed`: fixed 2-D sine-cosine, ``[H*W, dim]`` added to the tokens.
- :class:`LearnedPosEmbed`: learned absolute embedding on a base grid, bicubically resized to any ``H x W``.
- :class:`RelativePositionBias`: learned per-head table indexed by the offset ``(dy, dx) = (y_q - y_k, x_q - x_k)``,
  an additive attention bias (``rel_pos_bias=`` of :func:`~yolo_attn.attention.functional.attend`; dense form via
  :meth:`RelativePositionBias.dense_bias`).
- :class:`ConditionalPosEncoding`: CPVT depthwise convolution with residual on ``[B, C, H, W]``.
- :func:`build_pos_encoding`: ``kind`` in :data:`POS_ENCODINGS` -> module.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .functional import relative_position_bias
from .tiling import symbolic_sizes

__all__ = [
    "POS_ENCODINGS",
    "ConditionalPosEncoding",
    "LearnedPosEmbed",
    "RelativePositionBias",
    "SinCosPosEmbed",
    "build_pos_encoding",
    "sincos_2d",
]


def sincos_2d(h: int, w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2-D sine-cosine embedding.

    With ``F = dim // 4`` frequencies ``omega_f = temperature ** (-f / F)``, token ``(y, x)`` gets
    ``[sin(x omega), cos(x omega), sin(y omega), cos(y omega)]`` (each block ``F`` wide).

    Args:
        h: Map height ``H``.
        w: Map width ``W``.
        dim: Embedding width; must be divisible by 4.
        temperature: Frequency base.

    Returns:
        Float32 ``[H * W, dim]``, row-major.

    Examples:
        >>> sincos_2d(5, 7, 64).shape
        torch.Size([35, 64])
    """
    if dim <= 0 or dim % 4:
        raise ValueError(f"{dim=} must be a positive multiple of 4 (sin/cos for each of y and x)")
    f = dim // 4
    omega = temperature ** (-torch.arange(f, dtype=torch.float32) / f)
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    ax, ay = x.reshape(-1, 1) * omega, y.reshape(-1, 1) * omega
    return torch.cat([ax.sin(), ax.cos(), ay.sin(), ay.cos()], dim=1)


class SinCosPosEmbed(nn.Module):
    """Module form of :func:`sincos_2d` (no parameters): ``forward(hw) -> [H*W, dim]`` on the module's device.

    Args:
        dim: Embedding width (multiple of 4).
        temperature: Frequency base.

    Examples:
        >>> SinCosPosEmbed(32)((4, 6)).shape
        torch.Size([24, 32])
    """

    def __init__(self, dim: int, temperature: float = 10000.0) -> None:
        super().__init__()
        sincos_2d(1, 1, dim, temperature)  # validate early
        self.dim, self.temperature = dim, temperature
        self.register_buffer("_device_anchor", torch.empty(0), persistent=False)

    def forward(self, hw: tuple[int, int]) -> torch.Tensor:
        """Return the ``[H*W, dim]`` embedding for ``hw = (H, W)``."""
        return sincos_2d(hw[0], hw[1], self.dim, self.temperature).to(self._device_anchor.device)


class LearnedPosEmbed(nn.Module):
    """Learned absolute embedding on a ``base_hw`` grid, bicubically interpolated to other sizes.

    At ``hw == base_hw`` the parameter is returned unchanged. In eval mode under ``torch.no_grad()`` the resized
    embedding is cached per ``(hw, device, dtype)`` in a plain dict (never in ``state_dict``), keyed also on the
    parameter version so an in-place update invalidates it; ``train()`` clears the cache.

    Args:
        dim: Embedding width.
        base_hw: Grid ``(H0, W0)`` of the parameter.

    Examples:
        >>> LearnedPosEmbed(32, base_hw=(20, 20))((13, 10)).shape
        torch.Size([130, 32])
    """

    def __init__(self, dim: int, base_hw: tuple[int, int] = (20, 20)) -> None:
        super().__init__()
        if dim <= 0 or len(base_hw) != 2 or min(base_hw) <= 0:
            raise ValueError(f"{dim=} must be positive and {base_hw=} two positive ints")
        self.dim, self.base_hw = dim, tuple(base_hw)
        self.pos_embed = nn.Parameter(torch.empty(1, dim, *self.base_hw))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self._cache: dict[tuple, torch.Tensor] = {}

    def train(self, mode: bool = True) -> LearnedPosEmbed:
        """Switch mode and drop the eval cache."""
        self._cache.clear()
        return super().train(mode)

    def _resize(self, hw: tuple[int, int]) -> torch.Tensor:
        grid = self.pos_embed
        if symbolic_sizes() or tuple(hw) != self.base_hw:  # traced: resize to the symbolic size (exact at base)
            grid = F.interpolate(grid, size=tuple(hw), mode="bicubic", align_corners=False)
        return grid.flatten(2).squeeze(0).transpose(0, 1)

    def forward(self, hw: tuple[int, int]) -> torch.Tensor:
        """Return the ``[H*W, dim]`` embedding for ``hw = (H, W)``."""
        if self.training or torch.is_grad_enabled() or torch.jit.is_tracing():
            return self._resize(hw)
        key = (tuple(hw), self.pos_embed.device, self.pos_embed.dtype, self.pos_embed._version)
        if key not in self._cache:
            self._cache.clear()
            self._cache[key] = self._resize(hw)
        return self._cache[key]


class RelativePositionBias(nn.Module):
    """Learned relative position bias table ``[heads, 2a-1, 2b-1]`` (Swin-style, clamped beyond ``max_offset``).

    ``forward()`` returns the table, to be passed as ``rel_pos_bias=`` to
    :func:`~yolo_attn.attention.functional.attend`, which indexes it at ``(dy + a - 1, dx + b - 1)``, ``dy = y_q - y_k``, ``dx = x_q - x_k`` (offsets clamped to the
    table). :meth:`dense_bias` gives the full ``[heads, N, N]`` bias for tests and small maps.

    Args:
        num_heads: Number of heads.
        max_offset: ``(a, b)``: largest represented ``|dy| + 1`` and ``|dx| + 1``.

    Examples:
        >>> rpb = RelativePositionBias(4, max_offset=(7, 7))
        >>> rpb().shape, rpb.dense_bias((5, 7)).shape
        (torch.Size([4, 13, 13]), torch.Size([4, 35, 35]))
    """

    def __init__(self, num_heads: int, max_offset: tuple[int, int] = (7, 7)) -> None:
        super().__init__()
        if num_heads <= 0 or len(max_offset) != 2 or min(max_offset) <= 0:
            raise ValueError(f"{num_heads=} must be positive and {max_offset=} two positive ints")
        self.num_heads, self.max_offset = num_heads, tuple(max_offset)
        a, b = self.max_offset
        self.table = nn.Parameter(torch.empty(num_heads, 2 * a - 1, 2 * b - 1))
        nn.init.trunc_normal_(self.table, std=0.02)

    def forward(self) -> torch.Tensor:
        """Return the table ``[heads, 2a-1, 2b-1]``."""
        return self.table

    def dense_bias(self, hw: tuple[int, int]) -> torch.Tensor:
        """Additive bias ``[heads, N, N]`` for a whole ``H x W`` map (``O(N^2)``: small maps / tests)."""
        return relative_position_bias(self.table, hw)


class ConditionalPosEncoding(nn.Module):
    """Conditional positional encoding (CPVT): ``x + depthwise_conv(x)`` on ``[B, C, H, W]``.

    Args:
        dim: Channels ``C``.
        kernel_size: Odd depthwise kernel size (same padding).

    Examples:
        >>> ConditionalPosEncoding(32)(torch.randn(2, 32, 5, 7)).shape
        torch.Size([2, 32, 5, 7])
    """

    def __init__(self, dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        if dim <= 0 or kernel_size <= 0 or kernel_size % 2 == 0:
            raise ValueError(f"{dim=} must be positive and {kernel_size=} a positive odd int")
        self.proj = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x + dwconv(x)``, ``[B, C, H, W]``."""
        return x + self.proj(x)


def _no_pos_encoding(dim: int, num_heads: int) -> nn.Module:
    return nn.Identity()


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "none": _no_pos_encoding,
    "sincos": lambda dim, num_heads, **kw: SinCosPosEmbed(dim, **kw),
    "learned": lambda dim, num_heads, **kw: LearnedPosEmbed(dim, **kw),
    "rel": lambda dim, num_heads, **kw: RelativePositionBias(num_heads, **kw),
    "cpe": lambda dim, num_heads, **kw: ConditionalPosEncoding(dim, **kw),
}
POS_ENCODINGS = tuple(_BUILDERS)


def build_pos_encoding(kind: str, dim: int, num_heads: int, **kwargs) -> nn.Module:
    """Build a positional encoding module by name.

    Args:
        kind: One of :data:`POS_ENCODINGS`: ``none`` (Identity), ``sincos``, ``learned``, ``rel``, ``cpe``.
        dim: Token channels.
        num_heads: Attention heads (used by ``rel``).
        **kwargs: Options of the chosen class (e.g. ``base_hw``, ``max_offset``, ``kernel_size``); unknown ones raise.

    Returns:
        The module (see the class of each kind for its ``forward`` contract).

    Examples:
        >>> type(build_pos_encoding("rel", 64, 4, max_offset=(5, 5))).__name__
        'RelativePositionBias'
    """
    if kind not in _BUILDERS:
        raise ValueError(f"{kind=} is not a known positional encoding; allowed: {POS_ENCODINGS}")
    try:
        return _BUILDERS[kind](dim, num_heads, **kwargs)
    except TypeError as err:  # unknown keyword for this kind
        raise ValueError(f"invalid options {sorted(kwargs)} for {kind=}: {err}") from err
