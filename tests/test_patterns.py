"""Pattern masks (the specification) vs naive (i, j) double-loop builders, identities, option errors."""

from __future__ import annotations

import pytest
import torch

from reference import naive_axial, naive_band, naive_global, naive_local, naive_window
from yolo_attn.attention import PATTERNS, pattern_mask

SIZES = [(5, 7), (8, 8), (13, 10), (1, 9)]


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("window, dilation", [(1, 1), (3, 1), (4, 1), (7, 1), (3, 2), (2, 3), (5, 4)])
def test_neighbourhood_vs_naive(hw, window, dilation):
    expected = naive_local(*hw, window, dilation)
    assert torch.equal(pattern_mask("dilated", hw, window=window, dilation=dilation), expected)
    if dilation == 1:
        assert torch.equal(pattern_mask("local", hw, window=window), expected)


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("window, shift", [(2, 0), (4, 2), (4, 1), (8, 4), (3, 0)])
def test_window_vs_naive(hw, window, shift):
    assert torch.equal(pattern_mask("window", hw, window=window, shift=shift), naive_window(*hw, window, shift))


def test_window_shift_true_is_half_window():
    assert torch.equal(pattern_mask("window", (13, 10), window=8, shift=True), naive_window(13, 10, 8, 4))


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("window, dilation", [(1, 1), (3, 1), (2, 3)])
def test_band_vs_naive(hw, window, dilation):
    assert torch.equal(pattern_mask("dilated1d", hw, window=window, dilation=dilation), naive_band(*hw, window, dilation))
    if dilation == 1:
        assert torch.equal(pattern_mask("local1d", hw, window=window), naive_band(*hw, window, 1))


@pytest.mark.parametrize("hw", SIZES)
def test_axial_vs_naive(hw):
    assert torch.equal(pattern_mask("axial", hw), naive_axial(*hw))


@pytest.mark.parametrize("num_global_tokens", [0, 2])
def test_global_vs_naive(num_global_tokens):
    base = naive_local(5, 7, 3)
    got = pattern_mask("global", (5, 7), base="local", window=3, global_idx=[0, 17, 34],
                       num_global_tokens=num_global_tokens)
    assert torch.equal(got, naive_global(base, [0, 17, 34], num_global_tokens))


def test_identities():
    assert pattern_mask("local", (5, 7), window=7).all()  # local(k >= map) == full
    assert pattern_mask("local", (5, 7), window=99).all()
    assert torch.equal(pattern_mask("dilated", (13, 10), window=5, dilation=1), pattern_mask("local", (13, 10), window=5))
    assert pattern_mask("window", (13, 10), window=13).all()  # window(map size) == full
    assert torch.equal(pattern_mask("global", (8, 8), base="dilated", window=3), pattern_mask("dilated", (8, 8), window=3))
    assert pattern_mask("stride", (8, 8), stride=2, window=3).equal(pattern_mask("dilated", (8, 8), dilation=2, window=3))


def _example_options(name):
    return {"custom": {"mask": torch.eye(130, dtype=torch.bool)}, "mixed": {"heads": {"local": 1, "axial": 1}}}.get(name, {})


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_every_query_attends_itself_and_sparse_is_not_full(name):
    mask = pattern_mask(name, (13, 10), **_example_options(name))
    assert mask.dtype == torch.bool and mask.shape[-1] == 130
    assert mask.diagonal(dim1=-2, dim2=-1).all()
    assert mask.any(-1).all()
    if name != "full":
        assert not mask.all()


def test_local_counts_exactly_k_by_k_and_even_window():
    assert (pattern_mask("local", (13, 10), window=7).sum(1) == 49).all()
    mask = pattern_mask("local", (9, 9), window=4).reshape(9, 9, 9, 9)
    assert mask[4, 4].nonzero()[:, 0].unique().tolist() == [2, 3, 4, 5]  # k//2 before, k//2 - 1 after


def test_mixed_mask_stacks_heads():
    mask = pattern_mask("mixed", (5, 7), heads={"local": 2, "window": 1}, window=3)
    assert mask.shape == (3, 35, 35)
    assert torch.equal(mask[1], pattern_mask("local", (5, 7), window=3))
    assert torch.equal(mask[2], pattern_mask("window", (5, 7), window=3))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: pattern_mask("lokal", (4, 4)), r"unknown attention pattern 'lokal'.*'local'"),
        (lambda: pattern_mask("local", (4, 4), window=0), r"window=0 must be an int >= 1"),
        (lambda: pattern_mask("dilated", (4, 4), dilation=-1), r"dilation=-1"),
        (lambda: pattern_mask("local", (4, 4), windw=3), r"unknown option\(s\) \['windw'\].*allowed: \['window'\]"),
        (lambda: pattern_mask("local", (0, 4)), r"hw=\(0, 4\)"),
        (lambda: pattern_mask("global", (4, 4), global_idx=[16]), r"global_idx=\[16\] must lie in \[0, 16\)"),
        (lambda: pattern_mask("custom", (2, 2), mask=torch.ones(3, 3, dtype=torch.bool)), r"\(3, 3\).*\(4, 4\)"),
        (lambda: pattern_mask("custom", (2, 2), mask=torch.eye(4)), r"bool tensor"),
        (lambda: pattern_mask("custom", (2, 2), mask=torch.zeros(4, 4, dtype=torch.bool)), r"rows \[0, 1, 2, 3\]"),
        (lambda: pattern_mask("mixed", (4, 4), heads={"local": 0}), r"heads\['local'\]=0"),
    ],
)
def test_errors_name_the_value(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
