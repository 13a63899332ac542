"""The FlexAttention path (issue 10, item 2): mask_mod translation vs independent naive masks, flex_attention vs the
float64 reference (CPU eager forward here; CUDA compiled forward + backward when a GPU is present), and dispatch.

Tolerances on CUDA, stated: fp32 1e-5 absolute (inputs N(0, 1), head_dim 16). In bf16 / fp16 (unit roundoff u =
2**-8 / 2**-11) the reference is computed in float64 *from the rounded inputs*, so only the kernel's own rounding
counts: the logits and the softmax are fp32 inside the kernel, the probabilities are rounded to the input dtype
before P @ V (relative error <= u each, so <= u * max|v| in the sum) and the output is rounded once more; we allow
``4 u max|v|`` absolute. Gradients go through two more low-precision products (dP = dO V^T, dS -> dQ, dK) and
allow ``16 u max|ref grad|``.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from reference import (
    naive_axial,
    naive_band,
    naive_global,
    naive_local,
    naive_rel_bias,
    naive_window,
    reference_attention,
)
from yolo_attn.attention import attend, flex
from yolo_attn.attention.functional import PATTERNS
from yolo_attn.attention.options import resolve

CUDA = torch.cuda.is_available()
SIZES = [(5, 7), (13, 10)]


def _naive(name: str, h: int, w: int, o: dict) -> torch.Tensor | None:
    """The independent mask of each case (tests/reference.py loops), or None for full attention."""
    shift = o.get("shift", 0)
    shift = o["window"] // 2 if shift is True else shift
    base = {
        "full": lambda: None,
        "local": lambda: naive_local(h, w, o["window"]),
        "dilated": lambda: naive_local(h, w, o["window"], o["dilation"]),
        "local1d": lambda: naive_band(h, w, o["window"]),
        "dilated1d": lambda: naive_band(h, w, o["window"], o["dilation"]),
        "window": lambda: naive_window(h, w, o["window"], shift),
        "axial": lambda: naive_axial(h, w),
    }
    if name == "global":
        return naive_global(naive_local(h, w, o["window"]), list(o.get("global_idx", [])), o.get("num_global_tokens", 0))
    return base[name]()


CASES = {
    "full": ("full", {}),
    "local3": ("local", {"window": 3}),
    "local4": ("local", {"window": 4}),
    "dilated": ("dilated", {"window": 3, "dilation": 2}),
    "local1d": ("local1d", {"window": 4}),
    "dilated1d": ("dilated1d", {"window": 2, "dilation": 3}),
    "window": ("window", {"window": 3}),
    "swin": ("window", {"window": 4, "shift": True}),
    "axial": ("axial", {}),
    "global": ("global", {"window": 3, "global_idx": [0, 5, 17]}),
    "global_tokens": ("global", {"window": 3, "num_global_tokens": 2, "global_idx": [3]}),
}
REL_CASES = ("full", "local3", "dilated", "swin")  # the patterns with a relative position bias
RUNS = [(case, False) for case in CASES] + [(case, True) for case in REL_CASES]
RUN_IDS = [f"{case}-{'rel_pos' if rel else 'plain'}" for case, rel in RUNS]


def test_every_flex_pattern_is_tested():
    assert {p for p, _ in CASES.values()} == set(flex.FLEX_PATTERNS)


def _resolved(pattern: str, options: dict, hw: tuple[int, int] = (64, 64)) -> dict:
    """Options as the flex path receives them (``PatternSpec.flex_options`` of the resolved options)."""
    spec, resolved = resolve(PATTERNS, pattern, options)
    return spec.flex_options(resolved, hw[0] * hw[1])


@pytest.mark.parametrize("hw", SIZES, ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_mask_mod_equals_naive_mask(case, hw):
    """The mask_mod, evaluated on the whole index grid, is the naive (loop-built) mask of the pattern."""
    pattern, options = CASES[case]
    mod = flex.flex_mask_mod(pattern, hw, _resolved(pattern, options, hw))
    want = _naive(pattern, *hw, options)
    if want is None:
        assert mod is None
        return
    i = torch.arange(want.shape[0])
    got = mod(torch.tensor(0), torch.tensor(0), i[:, None], i[None, :])
    assert torch.equal(got, want)


def _inputs(n: int, dtype: torch.dtype, device: str, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 2, n, 16, generator=g).to(device, dtype).requires_grad_() for _ in range(3)]


def _rel_table(case: str, options: dict) -> torch.Tensor:
    a = 4 if case == "full" else (options["window"] - 1) * options.get("dilation", 1) + 1
    return (torch.randn(2, 2 * a - 1, 2 * a - 1, generator=torch.Generator().manual_seed(1)) * 0.5).requires_grad_()


@pytest.mark.parametrize("case, rel", RUNS, ids=RUN_IDS)
def test_flex_forward_cpu_matches_reference(case, rel):
    """flex_attention (eager: forward only on CPU) with our block mask / score_mod vs the float64 reference."""
    pattern, options = CASES[case]
    hw = (13, 10)
    mask = _naive(pattern, *hw, options)
    n = hw[0] * hw[1] + options.get("num_global_tokens", 0)
    q, k, v = (t.detach() for t in _inputs(n, torch.float32, "cpu"))
    table = _rel_table(case, options).detach() if rel else None
    out = flex.flex_attend(q, k, v, pattern, hw, _resolved(pattern, options, hw), table, compile=False)
    bias = None if table is None else naive_rel_bias(table.double(), *hw)
    ref = reference_attention(q, k, v, mask, bias)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)
    if mask is not None:  # non-vacuity: the pattern matters
        assert (out.double() - reference_attention(q, k, v, None, bias)).abs().max() > 1e-2


# -------------------------------------------------------------------------------------------------------- dispatch
FAKE_CUDA = SimpleNamespace(is_cuda=True)  # stands in for a CUDA tensor: choose_backend reads only .is_cuda


def test_default_table_is_tiled_until_measured():
    assert set(flex.CUDA_BACKEND.values()) == {"tiled"}
    assert set(flex.CUDA_BACKEND) == set(flex.FLEX_PATTERNS)


def test_dispatch_rules():
    with flex.use_cuda_backend("flex"):
        assert flex.choose_backend("local", FAKE_CUDA) == "flex"
        assert flex.choose_backend("local", torch.zeros(1)) == "tiled"  # CPU keeps the tiled path
        assert flex.choose_backend("local", FAKE_CUDA, dropout_p=0.1) == "tiled"  # flex has no dropout
        assert flex.choose_backend("mixed", FAKE_CUDA) == "tiled"  # runs its head groups through their own patterns
        seen = []

        def traced(x):
            seen.append(flex.choose_backend("local", FAKE_CUDA))
            return x * 2

        torch.jit.trace(traced, torch.ones(1), check_trace=False)
        assert seen == ["tiled"]  # tracing / export keeps the traceable tiled path
    with flex.use_cuda_backend({"window": "flex"}):
        assert flex.choose_backend("window", FAKE_CUDA) == "flex"
        assert flex.choose_backend("local", FAKE_CUDA) == "tiled"
    assert flex.choose_backend("window", FAKE_CUDA) == "tiled"  # restored


def test_cpu_attend_never_calls_flex(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("flex called on CPU")

    monkeypatch.setattr(flex, "flex_attend", boom)
    q = torch.randn(1, 2, 35, 8)
    with flex.use_cuda_backend("flex"):
        out = attend(q, q, q, "local", hw=(5, 7), window=3)
    assert out.shape == q.shape


@pytest.mark.parametrize("text, message", [
    ("fast", "YOLO_ATTN_CUDA_BACKEND='fast' is not a CUDA attention backend; allowed: tiled, flex"),
    ("local=flex,blob=tiled", "pattern 'blob' has no CUDA backend choice"),
    ("local=speedy", "YOLO_ATTN_CUDA_BACKEND local='speedy' is not a CUDA attention backend"),
])
def test_backend_table_rejects_bad_values(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        flex._parse_table(text)


def test_backend_table_parses_env_syntax():
    assert flex._parse_table("local=flex, window=tiled") == {"local": "flex", "window": "tiled"}
    assert set(flex._parse_table("flex").values()) == {"flex"}
    with pytest.raises(ValueError, match="backend='fast'"):
        flex.set_cuda_backend("fast")


# ------------------------------------------------------------------------------------------------------------ CUDA
TOL = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case, rel", RUNS, ids=RUN_IDS)
def test_flex_cuda_matches_reference(case, rel, dtype):
    """Compiled flex on CUDA through attend() (backend table set to flex): outputs and dq, dk, dv (and d table)."""
    pattern, options = CASES[case]
    hw = (13, 10)
    mask = _naive(pattern, *hw, options)
    n = hw[0] * hw[1] + options.get("num_global_tokens", 0)
    q, k, v = _inputs(n, dtype, "cuda")
    table = _rel_table(case, options).cuda().to(dtype).detach().requires_grad_() if rel else None
    with flex.use_cuda_backend("flex"):
        out = attend(q, k, v, pattern, hw=hw, rel_pos_bias=table, **options)
    assert any(key[0] == pattern and key[4] == dtype for key in flex.COMPILE_SECONDS), "flex did not run"
    bias = None if table is None else naive_rel_bias(table.double(), *hw)
    ref = reference_attention(q, k, v, None if mask is None else mask.cuda(), bias)
    grad = torch.randn_like(ref)
    inputs = (q, k, v) if table is None else (q, k, v, table)
    got = torch.autograd.grad(out, inputs, grad.to(dtype))
    want = torch.autograd.grad(ref, inputs, grad)
    if dtype == torch.float32:
        out_tol, grad_tol = 1e-5, [1e-5] * len(inputs)
    else:
        out_tol = 4 * TOL[dtype] * float(v.detach().abs().max())
        grad_tol = [16 * TOL[dtype] * float(w.abs().max()) for w in want]
    torch.testing.assert_close(out.double(), ref.detach(), atol=out_tol, rtol=0)
    for name, a, b, tol in zip(("dq", "dk", "dv", "dtable"), got, want, grad_tol):
        torch.testing.assert_close(a.double(), b, atol=tol, rtol=0, msg=lambda m, name=name: f"{name}: {m}")
