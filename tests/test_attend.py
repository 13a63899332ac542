"""Every fast path of ``attend`` vs the dense float64 reference under a mask built by the independent naive code
of ``tests/reference.py`` (never the library's own ``pattern_mask``): outputs and dq/dk/dv, relative position bias,
identities against independent paths, non-vacuity, linear memory, and the ``Attention`` module's contract."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from reference import naive_local, naive_mask, naive_rel_bias, naive_window, reference_attention
from yolo_attn.attention import Attention, attend
from yolo_attn.attention.tiling import tile_plan


def _graph(h, w):
    """A random undirected graph with self loops (graph attention: only joined nodes attend)."""
    g = torch.Generator().manual_seed(h * 100 + w)
    adj = torch.rand(h * w, h * w, generator=g) < 0.1
    return adj | adj.T | torch.eye(h * w, dtype=torch.bool)


CASES = {
    "full": ("full", {}),
    "local3": ("local", {"window": 3}),
    "local4": ("local", {"window": 4}),
    "local_clamped": ("local", {"window": 9}),  # clamped to the 5x7 and 8x8 maps, a real window at 13x10, 20x20
    "dilated": ("dilated", {"window": 3, "dilation": 2}),
    "dilated4": ("dilated", {"window": 4, "dilation": 2}),
    "stride3": ("stride", {"window": 2, "stride": 3}),
    "window": ("window", {"window": 3}),
    "swin": ("window", {"window": 4, "shift": True}),
    "swin_shift1": ("window", {"window": 6, "shift": 1}),  # clamped to the 5-row map (shift dropped there)
    "axial": ("axial", {}),
    "local1d": ("local1d", {"window": 4}),
    "local1d_odd": ("local1d", {"window": 3}),
    "dilated1d": ("dilated1d", {"window": 2, "dilation": 3}),
    "global": ("global", {"base": "local", "window": 4, "global_idx": [0, 5, 17]}),
    "global_tokens": ("global", {"base": "dilated", "window": 3, "num_global_tokens": 2, "global_idx": [3, 34]}),
    "global_swin": ("global", {"base": "window", "window": 4, "shift": True, "num_global_tokens": 1,
                               "global_idx": [6, 20]}),
    "custom": ("custom", {"mask": _graph}),
    "mixed": ("mixed", {"heads": {"local": 1, "dilated": 1, "global": 1, "axial": 1, "window": 1}, "window": 4,
                        "options": {"global": {"global_idx": [1]}, "window": {"shift": True}}}),
}
SIZES = [(5, 7), (8, 8), (13, 10), (20, 20)]


def _inputs(n, heads, batch, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, n, 8, generator=g, dtype=dtype).requires_grad_() for _ in range(3)]


def _check(pattern, options, hw, batch, dtype, rel_table=None):
    mask = naive_mask(pattern, hw, **options)
    heads = mask.shape[0] if mask.dim() == 3 else 2
    q, k, v = _inputs(mask.shape[-1], heads, batch, dtype)
    out = attend(q, k, v, pattern, hw=hw, rel_pos_bias=rel_table, **options)
    bias = None if rel_table is None else naive_rel_bias(rel_table.detach().double(), *hw)
    ref = reference_attention(q, k, v, mask, bias)
    grad = torch.randn_like(ref)
    tol = 1e-9 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=0)
    got = torch.autograd.grad(out, (q, k, v), grad.to(dtype))
    want = torch.autograd.grad(ref, (q, k, v), grad)
    for name, a, b in zip("qkv", got, want):
        torch.testing.assert_close(a.double(), b.double(), atol=tol, rtol=0, msg=f"d{name} differs")
    return out


@pytest.mark.parametrize("batch, dtype", [(1, torch.float64), (2, torch.float32)], ids=["b1-fp64", "b2-fp32"])
@pytest.mark.parametrize("hw", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_path_matches_reference(case, hw, batch, dtype):
    _check(*CASES[case], hw, batch, dtype)


REL_CASES = {**{name: CASES[name] for name in ("full", "local3", "local4", "dilated", "dilated4", "window", "swin")},
             "mixed": ("mixed", {"heads": {"local": 1, "window": 1}, "window": 3, "options": {"window": {"shift": 1}}})}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("hw", [(5, 7), (13, 10), (20, 20)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("case", sorted(REL_CASES))
def test_rel_pos_bias_matches_reference(case, hw, dtype):
    table = torch.randn(2, 5, 7, dtype=dtype, requires_grad=True)  # a=3, b=4: larger offsets clip
    pattern, options = REL_CASES[case]
    out = _check(pattern, options, hw, 2, dtype, table)
    ref_table = table.detach().double().requires_grad_()
    q, k, v = _inputs(hw[0] * hw[1], 2, 2, dtype)
    grad = torch.randn(out.shape, dtype=torch.float64)
    got = torch.autograd.grad(attend(q, k, v, pattern, hw=hw, rel_pos_bias=table, **options), table, grad.to(dtype))
    ref = reference_attention(q, k, v, naive_mask(pattern, hw, **options), naive_rel_bias(ref_table, *hw))
    want = torch.autograd.grad(ref, ref_table, grad)
    torch.testing.assert_close(got[0].double(), want[0], atol=1e-9 if dtype == torch.float64 else 1e-4, rtol=0)


def _run(pattern, hw, num_heads=2, **options):
    q, k, v = _inputs(hw[0] * hw[1] + options.get("num_global_tokens", 0), num_heads, 1, torch.float64, seed=3)
    return attend(q, k, v, pattern, hw=hw, **options)


def test_identities_against_independent_paths():
    """Each degenerate pattern vs the float64 reference under an independently built mask (not the path it reuses)."""
    def ref(hw, mask=None):
        return reference_attention(*_inputs(hw[0] * hw[1], 2, 1, torch.float64, seed=3), mask)

    torch.testing.assert_close(_run("local", (5, 7), window=9), ref((5, 7)))  # local(k >= map) == full
    torch.testing.assert_close(_run("window", (5, 7), window=7), ref((5, 7)))  # window(map size) == full
    torch.testing.assert_close(_run("window", (5, 7), window=7, shift=True), ref((5, 7)))
    torch.testing.assert_close(_run("dilated", (13, 10), window=3, dilation=1), ref((13, 10), naive_local(13, 10, 3)))
    torch.testing.assert_close(_run("dilated", (13, 10), window=4, dilation=1), ref((13, 10), naive_local(13, 10, 4)))
    torch.testing.assert_close(_run("global", (13, 10), base="window", window=4, shift=2),  # global(no tokens) == base
                               ref((13, 10), naive_window(13, 10, 4, 2)))
    torch.testing.assert_close(_run("global", (13, 10), base="dilated", window=3),
                               ref((13, 10), naive_local(13, 10, 3, 2)))


@pytest.mark.parametrize("case", sorted(set(CASES) - {"full"}))
def test_sparse_output_differs_from_full(case):
    pattern, options = CASES[case]
    num_heads = sum(options["heads"].values()) if pattern == "mixed" else 2
    out, full = _run(pattern, (13, 10), num_heads, **options), _run("full", (13, 10), num_heads)
    if options.get("num_global_tokens"):
        out = out[:, :, options["num_global_tokens"]:]
    assert (out - full).abs().max() > 1e-2


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor (numel) produced by any op while active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def _largest(pattern, side, **options):
    tile_plan.cache_clear()
    n = side * side + options.get("num_global_tokens", 0)
    q, k, v = (torch.randn(1, 2, n, 8) for _ in range(3))
    with _LargestTensor() as mode:
        attend(q, k, v, pattern, hw=(side, side), **options)
    return mode.largest


@pytest.mark.parametrize("pattern, options, growth", [
    ("local", {"window": 7}, 4.5), ("dilated", {"window": 7}, 4.5), ("window", {"window": 7, "shift": True}, 4.5),
    ("global", {"window": 7, "global_idx": [0, 99], "num_global_tokens": 2}, 4.5), ("local1d", {"window": 7}, 4.5),
    ("axial", {}, 8.5),  # row + column logits: N * (h + w) grows as N^1.5
])
def test_sparse_paths_never_build_n_by_n(pattern, options, growth):
    small, large = _largest(pattern, 40, **options), _largest(pattern, 80, **options)
    assert small < 1600 ** 2 // 2 and large < 6400 ** 2 // 8
    assert large / small < growth, f"largest tensor grows {large / small:.1f}x for 4x tokens"


def test_attention_module_matches_functional_and_caches_nothing_in_state_dict():
    attn = Attention(32, num_heads=2, pattern="dilated", window=3, dilation=2, rel_pos=True).eval()
    x = torch.randn(2, 13 * 10, 32)
    out = attn(x, (13, 10))
    q, k, v = attn.qkv(x).reshape(2, 130, 3, 2, 16).permute(2, 0, 3, 1, 4)
    mask = naive_local(13, 10, 3, 2)
    ref = reference_attention(q, k, v, mask, naive_rel_bias(attn.rel_pos_bias.detach(), 13, 10))
    torch.testing.assert_close(out, attn.proj(ref.float().transpose(1, 2).reshape(2, 130, 32)), atol=1e-5, rtol=0)
    assert set(attn.state_dict()) == {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias", "rel_pos_bias"}
    assert attn.rel_pos_bias.shape == (2, 9, 9)  # offsets up to (3 - 1) * 2


def test_dropout_only_when_training():
    attn = Attention(16, num_heads=2, pattern="local", window=3, attn_drop=0.5)
    x = torch.randn(1, 36, 16)
    attn.eval()
    torch.testing.assert_close(attn(x, (6, 6)), attn(x, (6, 6)))
    attn.train()
    assert not torch.allclose(attn(x, (6, 6)), attn(x, (6, 6)))


@pytest.mark.parametrize("kwargs, match", [
    ({"dim": 30, "num_heads": 4}, r"dim=30 must be divisible by num_heads=4"),
    ({"pattern": "local", "window": 0}, r"window=0"),
    ({"pattern": "local", "dilation": 2}, r"unknown option\(s\) \['dilation'\].*allowed: \['window'\]"),
    ({"pattern": "loacl"}, r"unknown attention pattern 'loacl'.*known patterns"),
    ({"pattern": "axial", "rel_pos": True}, r"rel_pos=True is not supported for pattern 'axial'"),
    ({"pattern": "mixed", "heads": {"local": 1, "axial": 1}}, r"sums to 2, expected num_heads=4"),
    ({"pattern": "mixed", "heads": {"local": 4}, "options": {"axial": {}}}, r"options given for \['axial'\]"),
])
def test_module_errors_name_the_value(kwargs, match):
    kwargs = {"dim": 32, "num_heads": 4, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        Attention(**kwargs)


def test_attend_rejects_bad_inputs():
    q = torch.randn(1, 2, 35, 8)
    with pytest.raises(ValueError, match=r"do not match \[B, heads, 36, d\]"):
        attend(q, q, q, "local", hw=(6, 6))
    with pytest.raises(ValueError, match=r"not supported by pattern 'axial'"):
        attend(q, q, q, "axial", hw=(5, 7), rel_pos_bias=torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match=r"rel_pos_bias shape \(2, 4, 3\)"):
        attend(q, q, q, "local", hw=(5, 7), rel_pos_bias=torch.zeros(2, 4, 3))


def test_benchmark_library_writes_its_report(tmp_path):
    from yolo_attn.bench.attention import run_attention_benchmark

    rows = run_attention_benchmark([64], ["local", "window"], repeats=1, out_dir=tmp_path, progress=False, flex=False)
    assert {r["contender"] for r in rows} == {"full", "local", "window", "local: SDPA + bool mask"}
    assert all((tmp_path / f"attention.{ext}").is_file() for ext in ("csv", "md", "png"))


@pytest.mark.parametrize("case", ["local4", "swin", "global_tokens"])
def test_chunked_tiles_match_reference(case, monkeypatch):
    from yolo_attn.attention import tiling

    monkeypatch.setattr(tiling, "CHUNK_LOGITS", 1)  # one tile per chunk
    table = None if case == "global_tokens" else torch.randn(2, 5, 7, dtype=torch.float64)
    _check(*CASES[case], (13, 10), 2, torch.float64, table)
