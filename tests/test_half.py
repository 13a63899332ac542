"""Half precision and AMP on CPU: every shipped config and every attention kind (issue 10, item 1).

What ultralytics does on a GPU, exercised without one: validation runs ``model.half()`` on half inputs, training
runs under ``torch.autocast`` (float16 with a GradScaler, or bfloat16). CPU runs fp16 / bf16 convolutions and
matmuls in torch >= 2.4, so all of it runs here.

Precision bound (stated, derived from the dtype): for a dtype with unit roundoff ``u`` (fp16: ``2**-11``, bf16:
``2**-8``) every op rounds its result with a relative error <= u, and to first order the errors of a composition of
L well-conditioned layers add up along the depth (Higham, *Accuracy and Stability of Numerical Algorithms*, ch. 3):
a normwise relative output error of order ``L * u``. YOLOv5n has L = 24 layers; allowing about one unit roundoff per
layer and rounding up to a power of two, we require

    ||y_lowp - y_fp32|| / ||y_fp32|| <= GROWTH * u,     GROWTH = 32,

for the network's outputs proper, the box-distribution logits and the class logits of the detection head
(``||.||``: 2-norm over the whole output, so the output's own norm is the scale), on a *trained* model whose
outputs depend on the input. (The decoded boxes and scores are nonlinear functions of these: softmax expectation
and sigmoid; they are checked to be finite.) Measured when this was written: plain yolov5n 11 u, worst config
18 u (yolov5n-cluster in fp16, whose discrete routing flips at near-ties), most configs 5-9 u. Plain yolov5n must
meet the same bound, so attention adds no precision loss of its own.

The same bound holds at the output of every attention module of the half model (measured <= 19 u), which is where
an attention error shows: the head outputs of yolov5n-local did not move beyond the bound when the half path of the
mask bias was planted to let every query see its whole tile (the attention branch is small next to the conv path),
the module outputs did. Exception, stated: cluster attention, whose k-means routing is a discrete decision that
half-precision q / k flip at near-ties (measured 120-150 u at its module outputs while the model output stays within
18 u); it is held to the bound at the model level only.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import traceback
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import yolo_attn
from trained import EVAL_IMGSZ, eval_images, input_dependence, trained_model
from yolo_attn.attention import ClusterAttention
from yolo_attn.attention.modules import QKVAttentionBase
from yolo_attn.blocks import C3Attn, attention_kinds
from yolo_attn.configs import shipped

CONFIGS = shipped("n")
PLAIN = "yolov5n.yaml"
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
GROWTH = 32
#: Minimum input dependence of a trained model: real images vs zeros change the boxes by >= 1% of the box scale
#: (mean over anchors) and some class score by >= 0.001; an untrained model changes them by ~1e-5 and ~1e-9.
MIN_DEPENDENCE = {"boxes": 0.01, "scores": 0.001}

#: Options per attention kind as a block (a kind not listed uses its defaults); HW divides no window.
KIND_OPTIONS = {
    "local": {"window": 3}, "dilated": {"window": 3, "dilation": 2}, "local1d": {"window": 2},
    "dilated1d": {"window": 2, "dilation": 3}, "window": {"window": 4, "shift": True}, "global": {"global_idx": [0, 65],
    "window": 3}, "mixed": {"heads": {"local": 1, "axial": 1}, "window": 3}, "tokens": {"num_global_tokens": 2,
    "window": 3}, "cluster": {"num_clusters": 4}, "sinkhorn": {"block_size": 16},
}
HW = (13, 10)
POS = ("none", "sincos", "learned", "rel", "cpe")


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _check_bound(low: tuple, ref: tuple, dtype: torch.dtype, what: str) -> None:
    """``low`` / ``ref``: eval outputs ``(decoded [B, 4 + nc, A], {"boxes": logits, "scores": logits, ...})``."""
    assert torch.isfinite(low[0]).all(), f"{what}: non-finite decoded outputs"
    for name in ("boxes", "scores"):
        err = _rel_err(low[1][name], ref[1][name])
        assert err <= GROWTH * UNIT_ROUNDOFF[dtype], \
            f"{what} {name} logits: relative error {err:.2e} = {err / UNIT_ROUNDOFF[dtype]:.1f} u > {GROWTH} u"


def _block(kind: str, pos: str | None = None) -> torch.nn.Module:
    options = {"heads": 2, **KIND_OPTIONS.get(kind, {})}
    if pos is not None:
        options["pos"] = pos
    return C3Attn(32, 32, 1, kind, options)


# ------------------------------------------------------------------------------------- trained configs, fp16 / bf16
@functools.lru_cache(maxsize=None)
def _half_model(cfg: str, data_yaml: str) -> torch.nn.Module:
    return trained_model(cfg, data_yaml).half()


@pytest.mark.parametrize("cfg", CONFIGS)
def test_trained_config_low_precision_matches_fp32(cfg, shapes_data):
    """model.half() on half inputs (ultralytics' GPU validation) and an autocast bf16 forward, vs fp32."""
    model = trained_model(cfg, shapes_data)
    x = eval_images(shapes_data)
    dependence = input_dependence(model, x)
    assert all(dependence[k] >= MIN_DEPENDENCE[k] for k in MIN_DEPENDENCE), f"output barely depends on input: {dependence}"
    half = _half_model(cfg, str(shapes_data))
    with torch.no_grad(), _attention_outputs(model) as want, _attention_outputs(half) as got:
        ref = model(x)
        y = half(x.half())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _check_bound(model(x), ref, torch.bfloat16, f"{cfg} autocast bfloat16")
    assert y[0].dtype == torch.float16 and y[0].shape == ref[0].shape == (len(x), 4 + 5, (EVAL_IMGSZ // 8) ** 2 * 21 // 16)
    _check_bound(y, ref, torch.float16, f"{cfg} model.half()")
    assert set(got) == set(want)
    for name in want:
        err = _rel_err(got[name], want[name])
        assert err <= GROWTH * UNIT_ROUNDOFF[torch.float16], \
            f"{cfg} attention module {name}: relative error {err / UNIT_ROUNDOFF[torch.float16]:.1f} u > {GROWTH} u"


@contextlib.contextmanager
def _attention_outputs(model: torch.nn.Module):
    """Record the output of every attention module (cluster excepted, see the module docstring) during a forward."""
    outs, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, QKVAttentionBase) and not isinstance(module, ClusterAttention):
            hooks.append(module.register_forward_hook(lambda m, i, o, name=name: outs.__setitem__(name, o.detach())))
    try:
        yield outs
    finally:
        for hook in hooks:
            hook.remove()


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("cfg", CONFIGS)
def test_config_autocast_training_step(cfg, shapes_data):
    """Forward + detection loss + backward under autocast fp16 and bf16: finite loss, every gradient finite."""
    from yolo_attn.bench.training import dataset_batch, with_loss_hyperparameters

    model = with_loss_hyperparameters(trained_model(cfg, shapes_data)).train()
    batch = dataset_batch(shapes_data, "train", 64, limit=1)
    for dtype in UNIT_ROUNDOFF:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype):
            loss, _ = model.loss(batch)
        loss.sum().backward()
        assert torch.isfinite(loss).all(), (dtype, loss)
        grads = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
        bad = [n for n, g in grads if not torch.isfinite(g).all()]
        assert not bad, f"{dtype}: non-finite gradients: {bad[:5]}"
        assert len(grads) > 0.9 * len(list(model.parameters())), f"{dtype}: parameters without gradient"


# ------------------------------------------------------------------------------------------------ dtype tracing
_SOFTMAX = ("the one softmax (kernel.attention_weights) normalises in fp32 and rounds the weights back to the value "
            "dtype before the weighted sum; on CUDA the half softmax kernel accumulates in fp32 too, the weights "
            "tensor is what is wider")
_LINEAR = ("linear attention sums phi(k) v over all N tokens: at 80x80 the sums exceed fp16's range (65504), so "
           "linear_attention computes in fp32 and returns the value dtype")
_SORT_KEYS = ("cluster sort keys are integers (cluster_id * N + position) cast to fp32, exact below 2**24, so the "
              "sort exports as ONNX TopK; no activation passes through fp32")
#: (where, aten op) -> (reason, required input dtypes or None). ``where`` is the innermost yolo_attn frame; ``None``
#: as the op allows every op there. Anything not listed that produces float32 in a half model fails.
ALLOWED_FP32 = {
    ("attention/kernel.py:attention_weights", "aten._to_copy.default"): (_SOFTMAX, {"float16"}),
    ("attention/kernel.py:attention_weights", "aten._softmax.default"): (_SOFTMAX, {"float32"}),
    ("attention/linear.py:linear_attention", None): (_LINEAR, None),
    ("attention/linear.py:elu_feature_map", None): (_LINEAR, None),
    ("attention/cluster.py:_chunk_layout", "aten._to_copy.default"): (_SORT_KEYS, {"int64"}),
    ("attention/cluster.py:_chunk_layout", "aten.sort.default"): (_SORT_KEYS, {"float32"}),
}
#: Fused SDPA kernels return their softmax statistics (logsumexp) in fp32 beside the half output: only their first
#: result (the attention output) is checked.
FUSED_PREFIX = "aten._scaled_dot_product"
_PKG = Path(yolo_attn.__file__).resolve().parent


def _where() -> str:
    """Innermost frame in yolo_attn (``attention/kernel.py:attention_weights``), else the innermost non-torch frame."""
    frames = [f for f in traceback.extract_stack() if "/torch/" not in f.filename and f.filename != __file__]
    for f in reversed(frames):
        if Path(f.filename).resolve().is_relative_to(_PKG):
            return f"{Path(f.filename).resolve().relative_to(_PKG).as_posix()}:{f.name}"
    return f"{Path(frames[-1].filename).name}:{frames[-1].name}" if frames else "?"


class Float32Tracer(TorchDispatchMode):
    """Records every op that produces a float32/float64 tensor: ``(where, op, input dtypes) -> count``."""

    def __init__(self) -> None:
        super().__init__()
        self.events: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        results = tree_flatten(out)[0]
        if str(func).startswith(FUSED_PREFIX):
            results = results[:1]
        if any(isinstance(t, torch.Tensor) and t.dtype in (torch.float32, torch.float64) for t in results):
            ins = frozenset(str(t.dtype).removeprefix("torch.") for t in tree_flatten((args, kwargs))[0]
                            if isinstance(t, torch.Tensor))
            self.events[(_where(), str(func), ins)] += 1
        return out


def _disallowed(events: Counter) -> list:
    bad = []
    for (where, op, ins), count in events.items():
        entry = ALLOWED_FP32.get((where, op)) or ALLOWED_FP32.get((where, None))
        if entry is None or (entry[1] is not None and not ins <= entry[1]):
            bad.append((where, op, sorted(ins), count))
    return bad


@pytest.mark.parametrize("cfg", CONFIGS)
def test_half_model_has_no_float32_round_trip(cfg, shapes_data):
    """Steady-state forward of a half model (plans cached by a first forward): no op computes in float32 except the
    documented allow-list entries."""
    model = _half_model(cfg, str(shapes_data))
    x = torch.nn.functional.interpolate(eval_images(shapes_data)[:1], size=64).half()
    with torch.no_grad():
        model(x)
        with Float32Tracer() as tracer:
            y = model(x)
    assert y[0].dtype == torch.float16
    assert not _disallowed(tracer.events), f"float32 on the hot path of a half {cfg}: {_disallowed(tracer.events)}"


def test_float32_tracer_sees_a_round_trip():
    """Positive control: a hidden ``.float()`` inside a half forward is reported, with its location."""
    lin = torch.nn.Linear(8, 8).half()
    with Float32Tracer() as tracer:
        lin(torch.randn(2, 8).half().float().half())
    assert _disallowed(tracer.events) and tracer.events


# ----------------------------------------------------------------------------------------- every kind as a block
@pytest.mark.parametrize("kind", attention_kinds())
def test_block_half_forward(kind):
    """``block.half()`` on half inputs: half, finite, and within the bound of its fp32 output (eval mode)."""
    block = _block(kind).eval()
    x = torch.randn(2, 32, *HW)
    with torch.no_grad():
        ref = block(x)
        y = copy.deepcopy(block).half()(x.half())
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    err = _rel_err(y, ref)
    assert err <= GROWTH * UNIT_ROUNDOFF[torch.float16], f"{kind}: relative error {err:.2e}"


@pytest.mark.parametrize("dtype", list(UNIT_ROUNDOFF), ids=str)
@pytest.mark.parametrize("kind", attention_kinds())
def test_block_autocast_forward_backward(kind, dtype):
    """Training-mode forward + backward under autocast: finite output and input / parameter gradients."""
    block = _block(kind).train()
    x = torch.randn(2, 32, *HW, requires_grad=True)
    with torch.autocast("cpu", dtype=dtype):
        y = block(x)
    assert y.dtype == dtype, f"{kind}: autocast output {y.dtype}"
    y.float().square().mean().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    missing = [n for n, p in block.named_parameters() if p.grad is None]
    bad = [n for n, p in block.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not missing and not bad, (missing, bad)


@pytest.mark.parametrize("pos", POS)
def test_positional_encodings_follow_half(pos):
    """Positional encodings (tables, interpolated embeddings, relative bias) run in the block's dtype."""
    block = _block("local", pos).eval()
    x = torch.randn(1, 32, *HW)
    with torch.no_grad():
        ref = block(x)
        y = copy.deepcopy(block).half()(x.half())
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    assert _rel_err(y, ref) <= GROWTH * UNIT_ROUNDOFF[torch.float16]


def test_learned_pattern_buffers_follow_half():
    """Cluster centroids / LSH rotations are buffers: ``.half()`` converts them and routing runs in half."""
    for router in ("kmeans", "lsh"):
        block = _block("cluster") if router == "kmeans" else C3Attn(32, 32, 1, "cluster", {"heads": 2, "router": "lsh",
                                                                                         "num_clusters": 4})
        half = block.half().eval()
        buffers = {n: b.dtype for n, b in half.named_buffers() if n.endswith(("centroids", "rotations"))}
        assert buffers and set(buffers.values()) == {torch.float16}, buffers
        with torch.no_grad():
            assert torch.isfinite(half(torch.randn(1, 32, *HW).half())).all()
