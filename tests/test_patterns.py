"""Pattern masks (the specification) vs the independent naive builders of ``tests/reference.py``, identities against
naive masks (not against another library mask), option errors."""

from __future__ import annotations

import pytest
import torch

from reference import naive_axial, naive_band, naive_global, naive_local, naive_mask, naive_window
from yolo_attn.attention import PATTERNS, pattern_mask

SIZES = [(5, 7), (8, 8), (13, 10), (1, 9), (20, 20)]
ids = [f"{h}x{w}" for h, w in SIZES]


@pytest.mark.parametrize("hw", SIZES, ids=ids)
@pytest.mark.parametrize("window, dilation", [(1, 1), (3, 1), (4, 1), (7, 1), (3, 2), (4, 2), (2, 3), (6, 3), (5, 4)])
def test_neighbourhood_vs_naive(hw, window, dilation):
    expected = naive_local(*hw, window, dilation)
    if max(hw) > dilation:
        assert torch.equal(pattern_mask("dilated", hw, window=window, dilation=dilation), expected)
    if dilation == 1:
        assert torch.equal(pattern_mask("local", hw, window=window), expected)


@pytest.mark.parametrize("hw", SIZES, ids=ids)
@pytest.mark.parametrize("window, shift", [(2, 0), (4, 2), (4, 1), (8, 4), (3, 0), (6, 5), (7, True)])
def test_window_vs_naive(hw, window, shift):
    expected = naive_window(*hw, window, window // 2 if shift is True else shift)
    assert torch.equal(pattern_mask("window", hw, window=window, shift=shift), expected)


@pytest.mark.parametrize("hw", SIZES, ids=ids)
@pytest.mark.parametrize("window, dilation", [(1, 1), (2, 1), (3, 1), (4, 1), (2, 2), (2, 3)])
def test_band_vs_naive(hw, window, dilation):
    expected = naive_band(*hw, window, dilation)
    assert torch.equal(pattern_mask("dilated1d", hw, window=window, dilation=dilation), expected)
    if dilation == 1:
        assert torch.equal(pattern_mask("local1d", hw, window=window), naive_band(*hw, window, 1))


@pytest.mark.parametrize("hw", SIZES, ids=ids)
def test_axial_vs_naive(hw):
    assert torch.equal(pattern_mask("axial", hw), naive_axial(*hw))


@pytest.mark.parametrize("hw", [(5, 7), (13, 10), (20, 20)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("num_global_tokens", [0, 2])
@pytest.mark.parametrize("base, options, naive", [
    ("local", {"window": 3}, lambda h, w: naive_local(h, w, 3)),
    ("local", {"window": 4}, lambda h, w: naive_local(h, w, 4)),
    ("dilated", {"window": 4, "dilation": 2}, lambda h, w: naive_local(h, w, 4, 2)),
    ("window", {"window": 4, "shift": True}, lambda h, w: naive_window(h, w, 4, 2)),
    ("window", {"window": 3}, lambda h, w: naive_window(h, w, 3, 0)),
], ids=["local3", "local4", "dilated4", "swin4", "window3"])
def test_global_vs_naive(base, options, naive, num_global_tokens, hw):
    n = hw[0] * hw[1]
    global_idx = [0, 17, n - 1]
    got = pattern_mask("global", hw, base=base, global_idx=global_idx, num_global_tokens=num_global_tokens, **options)
    assert torch.equal(got, naive_global(naive(*hw), global_idx, num_global_tokens))


@pytest.mark.parametrize("hw", [(5, 7), (20, 20)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_mixed_vs_naive(hw):
    options = {"heads": {"window": 1, "local": 2, "dilated1d": 1, "global": 1, "axial": 1}, "window": 4,
               "options": {"window": {"shift": True}, "global": {"base": "dilated", "global_idx": [2]}}}
    got = pattern_mask("mixed", hw, **options)
    expected = torch.stack([naive_window(*hw, 4, 2), naive_local(*hw, 4), naive_local(*hw, 4), naive_band(*hw, 4, 2),
                            naive_global(naive_local(*hw, 4, 2), [2]), naive_axial(*hw)])
    assert torch.equal(got, expected)
    assert torch.equal(naive_mask("mixed", hw, **options), expected)  # the dispatcher test_attend relies on


def test_identities():
    """Degenerate cases vs naive masks built directly, never against another library mask."""
    assert pattern_mask("local", (5, 7), window=7).all()  # local(k >= map) == full
    assert pattern_mask("local", (5, 7), window=99).all()
    assert pattern_mask("window", (13, 10), window=13).all()  # window(map size) == full
    assert pattern_mask("window", (13, 10), window=13, shift=True).all()
    assert torch.equal(pattern_mask("dilated", (13, 10), window=5, dilation=1), naive_local(13, 10, 5))
    assert torch.equal(pattern_mask("dilated", (13, 10), window=4, dilation=1), naive_local(13, 10, 4))
    assert torch.equal(pattern_mask("global", (8, 8), base="dilated", window=3), naive_local(8, 8, 3, 2))
    assert torch.equal(pattern_mask("global", (8, 8), base="window", window=3, shift=1), naive_window(8, 8, 3, 1))
    assert torch.equal(pattern_mask("stride", (8, 8), stride=3, window=3), naive_local(8, 8, 3, 3))
    assert torch.equal(pattern_mask("stride1d", (4, 5), stride=3, window=2), naive_band(4, 5, 2, 3))


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
    assert mask[0, 8].nonzero()[:, 1].unique().tolist() == [5, 6, 7, 8]  # moved inside the map at the border


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
