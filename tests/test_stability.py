"""Numerical stability under mixed precision: the softmax kernel, every attention kind and every block.

CPU: 50 forward + backward passes per block under ``torch.autocast("cpu", torch.bfloat16)`` with inputs scaled
x100..x1000 (a different scale every pass, evenly spaced, both ends included, in a shuffled order), on a 13 x 10 map
that no window divides. CUDA (when present): the same in float16, and a short AMP training whose losses stay finite.
"""

from __future__ import annotations

import csv

import pytest
import torch

from yolo_attn.attention.kernel import attention_weights, masked_attention
from yolo_attn.blocks import AttnBlock, BoTBlock, C3Attn, build_attention

PASSES = 50
HW = (13, 10)  # divides no window below
KINDS = {
    "full": {},
    "local": {"window": 3},
    "dilated": {"window": 3, "dilation": 2},
    "local1d": {"window": 2},
    "dilated1d": {"window": 2, "dilation": 3},
    "window": {"window": 4},
    "window-shift": {"window": 4, "shift": True},
    "axial": {},
    "global": {"global_idx": [0, 65], "window": 3},
    "tokens": {"num_global_tokens": 2, "window": 3},
    "mixed": {"heads": {"local": 1, "dilated": 1}, "window": 3, "dilation": 2},
    "cluster": {"num_clusters": 4},
    "sinkhorn": {"block_size": 16},
    "linear": {},
    "area": {"area": 3},
    "reduce": {"ratio": 2},
    "performer": {"num_features": 16},
    "routing": {"regions": 3, "topk": 2},
}
CUDA = torch.cuda.is_available()


def _options(name: str) -> tuple[str, dict]:
    opts = dict(KINDS[name])
    opts.setdefault("heads", 2)
    return name.split("-")[0], opts


def _blocks() -> dict[str, callable]:
    out = {f"C3Attn-{name}": (lambda name=name: C3Attn(64, 64, 1, *_options(name))) for name in KINDS}
    out["AttnBlock-window-shift"] = lambda: AttnBlock(64, 64, 1, *_options("window-shift"))
    out["AttnBlock-linear"] = lambda: AttnBlock(64, 64, 1, *_options("linear"))
    out["BoTBlock"] = lambda: BoTBlock(64, 64, 1)  # full attention + relative position bias
    out["BoTBlock-local"] = lambda: BoTBlock(64, 64, 1, "local", {"window": 3})
    return out


BLOCKS = _blocks()


def _finite(t: torch.Tensor | None) -> bool:
    return t is None or bool(torch.isfinite(t).all())


def _hammer(module: torch.nn.Module, make_input, device: str, dtype: torch.dtype, passes: int = PASSES) -> None:
    """``passes`` forward + backward passes under autocast; every output and gradient must be finite."""
    gen = torch.Generator().manual_seed(0)
    scales = torch.linspace(100, 1000, passes)[torch.randperm(passes, generator=gen)].tolist()
    module.to(device).train()
    for i, scale in enumerate(scales):
        x = (make_input(gen) * scale).to(device).requires_grad_()
        with torch.autocast(device, dtype=dtype):
            y = module(x)
        y.float().square().mean().backward()
        bad = [n for n, p in module.named_parameters() if not _finite(p.grad)]
        assert _finite(y) and _finite(x.grad) and not bad, f"pass {i} (scale {scale:.0f}): non-finite {bad[:3] or 'output'}"
        module.zero_grad(set_to_none=True)


# ---------------------------------------------------------------------------------------------------------- kernel
def test_softmax_of_huge_bf16_logits_is_finite_and_exact():
    torch.manual_seed(0)
    logits = (torch.randn(4, 64, 64, dtype=torch.float64) * 1e4).clamp(-3e4, 3e4)
    mask = torch.rand(64, 64) > 0.5
    mask |= torch.eye(64, dtype=torch.bool)  # every row keeps one key
    got = attention_weights(logits.to(torch.bfloat16), mask=mask)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    ref = torch.softmax(logits.to(torch.bfloat16).double().masked_fill(~mask, float("-inf")), -1)
    torch.testing.assert_close(got.double(), ref, atol=1e-6, rtol=1e-3)  # softmax itself runs in fp32
    assert torch.allclose(got.sum(-1), torch.ones(4, 64), atol=1e-5)


@pytest.mark.parametrize("spread", [1.0, 300.0])
def test_onnx_export_form_of_masked_softmax_agrees_with_the_plain_form(spread, monkeypatch):
    # In ONNX exports the logits are floored at row max - 40 (kernel._floor_logits, against ONNX Runtime's denormal
    # exps); the weights must agree with the plain form, also where valid logits spread far beyond 40, and a row with
    # no allowed key stays uniform.
    torch.manual_seed(1)
    logits = torch.randn(3, 40, 60) * spread
    mask = torch.rand(40, 60) < 0.4
    mask[0] = False  # a padding row: no allowed key
    mask[1:, 0] = True
    bias = torch.randn(40, 60)
    plain = attention_weights(logits, mask=mask, bias=bias)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    floored = attention_weights(logits, mask=mask, bias=bias)
    assert not torch.equal(floored, plain)  # the floor acted: masked slots weigh exp(-40) of the row's top, not 0
    torch.testing.assert_close(floored, plain, atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(floored[:, 0], torch.full((3, 60), 1 / 60))


def test_masked_attention_under_autocast_with_huge_queries():
    q = torch.randn(2, 2, 50, 16) * 1e3
    k, v = torch.randn(2, 2, 50, 16) * 1e3, torch.randn(2, 2, 50, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = masked_attention(q, k, v, mask=torch.ones(50, 50, dtype=torch.bool).tril())
    ref = torch.softmax((q.double() @ k.double().transpose(-1, -2) / 4).masked_fill(
        ~torch.ones(50, 50, dtype=torch.bool).tril(), float("-inf")), -1) @ v.double()
    assert torch.isfinite(out).all()
    # logits ~1e6 in bf16 (8 bits of mantissa) pick the same argmax as float64: one-hot rows, so values match
    assert (out.double() - ref).abs().mean() < 0.1


# ------------------------------------------------------------------------------------------------- blocks on CPU
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", list(BLOCKS))
def test_block_bf16_autocast_large_inputs_stays_finite(name):
    _hammer(BLOCKS[name](), lambda g: torch.randn(2, 64, *HW, generator=g), "cpu", torch.bfloat16)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", list(KINDS))
def test_attention_core_bf16_huge_tokens_stays_finite(name):
    """The token attention alone (no norm in front): tokens of magnitude 1e2..1e3 go straight into q, k, v."""
    attn, _ = build_attention(32, *_options(name))

    class Tokens(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = attn

        def forward(self, t):
            return self.attn(t, HW)

    _hammer(Tokens(), lambda g: torch.randn(2, HW[0] * HW[1], 32, generator=g), "cpu", torch.bfloat16)


# ---------------------------------------------------------------------------------------------------------- CUDA
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("name", list(BLOCKS))
def test_block_fp16_autocast_cuda_stays_finite(name):
    _hammer(BLOCKS[name](), lambda g: torch.randn(2, 64, *HW, generator=g), "cuda", torch.float16)


@pytest.mark.slow
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("cfg", ["yolov5n-local.yaml", "yolov5n-linear.yaml"])
def test_short_amp_training_on_cuda_stays_finite(cfg, shapes_data, tmp_path):
    import yolo_attn

    model = yolo_attn.YOLO(cfg)
    model.train(data=str(shapes_data), epochs=2, imgsz=128, batch=8, workers=0, device=0, amp=True, plots=False,
                project=str(tmp_path), name="amp", exist_ok=True, nbs=8, warmup_epochs=0)
    assert model.trainer.amp, "AMP was turned off"
    with open(tmp_path / "amp" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for row in rows:
        for key in ("train/box_loss", "train/cls_loss", "train/dfl_loss"):
            assert torch.isfinite(torch.tensor(float(row[key]))), (key, row)
    assert all(torch.isfinite(p).all() for p in model.trainer.model.parameters())
