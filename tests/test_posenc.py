"""Positional encodings: shapes, values vs naive formulas / loops, interpolation identities, factory errors."""

from __future__ import annotations

import math

import pytest
import torch

from reference import naive_local
from yolo_attn.attention.functional import attend
from yolo_attn.attention.posenc import (
    POS_ENCODINGS,
    ConditionalPosEncoding,
    LearnedPosEmbed,
    RelativePositionBias,
    SinCosPosEmbed,
    build_pos_encoding,
    sincos_2d,
)

SIZES = [(5, 7), (8, 8), (13, 10)]


@pytest.mark.parametrize("hw", SIZES)
def test_sincos_matches_naive_formula(hw):
    h, w, dim, temp = *hw, 16, 100.0
    got = sincos_2d(h, w, dim, temperature=temp)
    assert got.shape == (h * w, dim) and got.dtype == torch.float32
    f = dim // 4
    for y in range(h):
        for x in range(w):
            row = []
            for fn, pos in ((math.sin, x), (math.cos, x), (math.sin, y), (math.cos, y)):
                row += [fn(pos / temp ** (i / f)) for i in range(f)]
            torch.testing.assert_close(got[y * w + x], torch.tensor(row, dtype=torch.float32), atol=1e-5, rtol=0)


def test_sincos_module_and_errors():
    assert SinCosPosEmbed(32)((4, 6)).shape == (24, 32)
    torch.testing.assert_close(SinCosPosEmbed(8)((3, 2)), sincos_2d(3, 2, 8), atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"dim=30 must be a positive multiple of 4"):
        sincos_2d(4, 4, 30)
    with pytest.raises(ValueError, match=r"dim=6"):
        SinCosPosEmbed(6)


@pytest.mark.parametrize("hw", SIZES)
def test_learned_pos_embed_shapes_and_identity_at_base_size(hw):
    pe = LearnedPosEmbed(12, base_hw=(8, 8))
    assert pe(hw).shape == (hw[0] * hw[1], 12)
    base = pe((8, 8))
    torch.testing.assert_close(base, pe.pos_embed.reshape(12, 64).t(), atol=0, rtol=0)
    assert base[3 * 8 + 5].tolist() == pe.pos_embed[0, :, 3, 5].tolist()  # row-major token y*W + x


def test_learned_pos_embed_gradient_and_eval_cache_outside_state_dict():
    pe = LearnedPosEmbed(8, base_hw=(4, 4))
    pe((5, 7)).sum().backward()
    assert pe.pos_embed.grad is not None and pe.pos_embed.grad.abs().sum() > 0
    assert set(pe.state_dict()) == {"pos_embed"}
    pe.eval()
    with torch.no_grad():
        first = pe((5, 7))
        assert pe((5, 7)) is first  # cached in eval
        torch.testing.assert_close(first, pe._resize((5, 7)), atol=0, rtol=0)
        pe.pos_embed.add_(1.0)  # in-place update invalidates the cache
        torch.testing.assert_close(pe((5, 7)), first + 1.0, atol=1e-5, rtol=0)
    assert set(pe.state_dict()) == {"pos_embed"}
    pe.train()
    assert not pe._cache


@pytest.mark.parametrize("hw", SIZES)
def test_relative_bias_matches_naive_loop(hw):
    a, b = 3, 4  # smaller than the maps: offsets beyond the table are clamped
    rpb = RelativePositionBias(2, max_offset=(a, b))
    table = rpb()
    assert table.shape == (2, 2 * a - 1, 2 * b - 1)
    dense = rpb.dense_bias(hw)
    h, w = hw
    assert dense.shape == (2, h * w, h * w)
    for i in range(h * w):
        for j in range(h * w):
            dy = min(max(i // w - j // w, -(a - 1)), a - 1)
            dx = min(max(i % w - j % w, -(b - 1)), b - 1)
            assert torch.equal(dense[:, i, j], table[:, dy + a - 1, dx + b - 1]), (i, j)


def test_relative_bias_table_convention_matches_attend_and_gets_gradient():
    """``attend(rel_pos_bias=table)`` equals a float64 dense softmax with ``dense_bias`` under the local mask."""
    rpb = RelativePositionBias(2, max_offset=(2, 3))
    with torch.no_grad():
        rpb.table.normal_()  # large enough to change the output visibly
    q, k, v = (torch.randn(1, 2, 35, 4) for _ in range(3))
    out = attend(q, k, v, "local", hw=(5, 7), window=3, rel_pos_bias=rpb())
    logits = (q.double() @ k.double().transpose(-2, -1)) / 2.0 + rpb.dense_bias((5, 7)).double()
    weights = logits.masked_fill(~naive_local(5, 7, 3), float("-inf")).softmax(-1)
    torch.testing.assert_close(out.double(), weights @ v.double(), atol=1e-5, rtol=0)
    out.square().sum().backward()
    assert rpb.table.grad.abs().sum() > 0


def test_conditional_pos_encoding_is_residual_depthwise_conv():
    cpe = ConditionalPosEncoding(6, kernel_size=3)
    x = torch.randn(2, 6, 5, 7)
    assert cpe(x).shape == x.shape
    assert cpe.proj.groups == 6
    torch.nn.init.zeros_(cpe.proj.weight)
    torch.nn.init.zeros_(cpe.proj.bias)
    torch.testing.assert_close(cpe(x), x, atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"kernel_size=4"):
        ConditionalPosEncoding(6, kernel_size=4)


@pytest.mark.parametrize(
    ("kind", "kwargs", "cls"),
    [
        ("none", {}, torch.nn.Identity),
        ("sincos", {"temperature": 100.0}, SinCosPosEmbed),
        ("learned", {"base_hw": (4, 4)}, LearnedPosEmbed),
        ("rel", {"max_offset": (3, 3)}, RelativePositionBias),
        ("cpe", {"kernel_size": 5}, ConditionalPosEncoding),
    ],
)
def test_factory_builds_every_kind(kind, kwargs, cls):
    assert isinstance(build_pos_encoding(kind, 16, 4, **kwargs), cls)


def test_factory_errors():
    assert POS_ENCODINGS == ("none", "sincos", "learned", "rel", "cpe")
    with pytest.raises(ValueError, match=r"kind='rope'.*\('none', 'sincos', 'learned', 'rel', 'cpe'\)"):
        build_pos_encoding("rope", 16, 4)
    with pytest.raises(ValueError, match=r"\['window'\].*kind='rel'"):
        build_pos_encoding("rel", 16, 4, window=3)
    with pytest.raises(ValueError, match=r"kind='none'"):
        build_pos_encoding("none", 16, 4, base_hw=(2, 2))
