"""Half precision and AMP on CPU: every shipped config and every attention kind (issue 10, item 1).

What ultralytics does on a GPU, exercised without one: validation runs ``model.half()`` on half inputs, training
runs under ``torch.autocast`` (float16 with a GradScaler, or bfloat16). CPU runs fp16 / bf16 convolutions and
matmuls in torch >= 2.4, so all of it runs here.

Precision bounds (stated, derived from the dtype's unit roundoff ``u``, fp16: ``2**-11``, bf16: ``2**-8``, with the
standard model of floating-point arithmetic: every op returns its exact result times ``1 + delta``, ``|delta| <= u``;
tests/rounding.py):

- One block, one attention module: ``||y_lowp - y_fp32|| / ||y_fp32|| <= S * u``, ``S`` the number of rounding
  stages on the longest path of the half forward, *counted* (:class:`~rounding.RoundingDepth`): one ``u`` per
  stage, the first-order sum for well-conditioned stages (Higham, ch. 3). Blocks at ``HW``: S = 27-42 (74 for
  sinkhorn, whose straight-through factor hangs off its 16 normalisation steps), measured <= 1.6 u; attention
  modules of the trained configs, locally (the half module on the fp32 model's input to it, rounded): S = 5-11
  (47 for sinkhorn), measured 0.7-1.4 u.
- Trained detectors, at the head's outputs proper (box-distribution logits and class logits; ``||.||`` the 2-norm
  over the whole output): on 160-240 stages the conditioning of the trained weights decides how the errors grow,
  and it changes from one training seed to the next (fp16, 4 seeds of tests/trained.py: plain yolov5n 10-23 u,
  yolov5n-cluster 15-55 u, yolov5n-dilated 16-37 u). The bound is relative to the error the standard model predicts
  for the same model, ``e_model(u)`` (fp32, its input and every rounding module's output perturbed by a relative
  ``delta`` uniform in ``[-u, u]``, :func:`~rounding.standard_model_error`)::

      ||y_lowp - y_fp32|| / ||y_fp32|| <= FACTOR * e_model(u),     FACTOR = 2.

  Measured ratios: fp16 0.71-1.26, bf16 autocast 0.54-1.12 (every config at seed 0; plain, dilated, cluster at
  3 seeds). Plain yolov5n meets the same bound. The arithmetic inside attention modules is exact in the model, so a
  precision loss of attention's own shows as excess. Why it is relative: the fp32 model with *one* top-level layer
  in fp16 puts 24 u at the head of yolov5n-dilated for its stem conv alone (12.7 u in plain yolov5n), the same
  layer in both, while its attention layers add 1.5-6.8 u (plain's C3 in their slots: 1.1-3.0 u): the trained
  dilated model amplifies every layer's rounding about twice as much, attention or not.

Planted once by hand: the tiled executor's half mask bias zeroed (every query sees its whole tile) -> head of
yolov5n-dilated 129 u > 2 x 32 u, yolov5n-local 31 u > 2 x 15 u, blocks 157-473 u > 37 stages; the Sinkhorn
normalisation back in fp16 -> 14 flipped choices > 3.

Discrete decisions: cluster routing and the Sinkhorn block choice are argmaxes that flip at near-ties when the
upstream error of a half model crosses them (yolov5n-cluster: 7 of 512 routes flipped at layer 17 -> 336 u at that
module's output); a flip is not a rounding error and no bound covers it. The module check is therefore local (its
input is the fp32 model's, rounded) and runs with routing's region choice and clustering's ids pinned to the fp32
module's (:func:`_pinned_decisions`); the fraction fp16 would have flipped there is bounded by MAX_FLIPS (measured:
yolov5n-routing 1 of 128 region rows at layer 13, yolov5n-cluster 0 of 256 ids at layer 13; a cluster variant with a
slim P3 layer, since dropped, flipped 2 of 512 there). The flip rate of the Sinkhorn choice is checked on its own
(:func:`test_sinkhorn_half_decisions`).
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
from rounding import RoundingDepth, standard_model_error
from trained import EVAL_IMGSZ, eval_images, input_dependence, trained_model
from yolo_attn.attention.modules import QKVAttentionBase
from yolo_attn.blocks import C3Attn, attention_kinds
from yolo_attn.configs import shipped

CONFIGS = shipped("n")
PLAIN = "yolov5n.yaml"
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
#: Trained detectors: low-precision error <= FACTOR * the standard model's error of the same model (module docstring).
FACTOR = 2
#: Perturbations averaged by the standard model (one draw varies by up to 2x: 12-24 u for yolov5n-c3tr).
MODEL_DRAWS = 3
#: Minimum input dependence of a trained model: real images vs zeros change the boxes by >= 1% of the box scale
#: (mean over anchors) and some class score by >= 0.001; an untrained model changes them by ~1e-5 and ~1e-9.
MIN_DEPENDENCE = {"boxes": 0.01, "scores": 0.001}
#: Discrete decisions fp16 may flip at near-ties in a module-local check (fraction of routing rows / cluster ids).
MAX_FLIPS = 0.02

#: Options per attention kind as a block (a kind not listed uses its defaults); HW divides no window.
KIND_OPTIONS = {
    "local": {"window": 3}, "dilated": {"window": 3, "dilation": 2}, "local1d": {"window": 2},
    "dilated1d": {"window": 2, "dilation": 3}, "window": {"window": 4, "shift": True}, "global": {"global_idx": [0, 65],
    "window": 3}, "mixed": {"heads": {"local": 1, "axial": 1}, "window": 3}, "tokens": {"num_global_tokens": 2,
    "window": 3}, "cluster": {"num_clusters": 4}, "sinkhorn": {"block_size": 16},
}
HW = (13, 10)
#: Every test here runs tiny tensors: one torch thread (two gain nothing at these sizes, and on shared cores they
#: wait on each other).
pytestmark = pytest.mark.usefixtures("one_thread")
POS = ("none", "sincos", "learned", "rel", "cpe")


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _check_bound(low: tuple, ref: tuple, model_err: dict[str, float], dtype: torch.dtype, what: str) -> None:
    """``low`` / ``ref``: eval outputs ``(decoded [B, 4 + nc, A], {"boxes": logits, "scores": logits, ...})``;
    ``model_err``: the standard model's error of each logit output at ``dtype``'s unit roundoff."""
    assert torch.isfinite(low[0]).all(), f"{what}: non-finite decoded outputs"
    u = UNIT_ROUNDOFF[dtype]
    for name in ("boxes", "scores"):
        err = _rel_err(low[1][name], ref[1][name])
        assert err <= FACTOR * model_err[name], (f"{what} {name} logits: relative error {err / u:.1f} u > {FACTOR} x "
                                                 f"the standard model's {model_err[name] / u:.1f} u")


def _check_stages(low: torch.Tensor, ref: torch.Tensor, stages: int, what: str) -> None:
    """Half output ``low`` within ``stages * u`` (fp16) of ``ref`` (see the module docstring)."""
    u = UNIT_ROUNDOFF[torch.float16]
    err = _rel_err(low, ref)
    assert err <= stages * u, f"{what}: relative error {err / u:.1f} u > {stages} rounding stages x u"


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
    """model.half() on half inputs (ultralytics' GPU validation) and an autocast bf16 forward, vs fp32: the head
    within FACTOR x the standard model's error; every attention module locally within its counted stages."""
    model = trained_model(cfg, shapes_data)
    x = eval_images(shapes_data)
    dependence = input_dependence(model, x)
    assert all(dependence[k] >= MIN_DEPENDENCE[k] for k in MIN_DEPENDENCE), f"output barely depends on input: {dependence}"
    half = _half_model(cfg, str(shapes_data))
    with torch.no_grad(), _attention_calls(model) as calls:
        ref = model(x)
    with torch.no_grad():
        y = half(x.half())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y_bf16 = model(x)
    keys = ("boxes", "scores")
    for dtype, low, what in ((torch.float16, y, "model.half()"), (torch.bfloat16, y_bf16, "autocast bfloat16")):
        model_err = standard_model_error(model, x, ref, UNIT_ROUNDOFF[dtype], keys, MODEL_DRAWS)
        _check_bound(low, ref, model_err, dtype, f"{cfg} {what}")
    assert y[0].dtype == torch.float16 and y[0].shape == ref[0].shape == (len(x), 4 + 5, (EVAL_IMGSZ // 8) ** 2 * 21 // 16)
    assert (len(calls) > 0) == (cfg != PLAIN), f"{cfg}: attention modules called: {sorted(calls)}"
    for name, (tokens, hw, want) in calls.items():
        with torch.no_grad(), _pinned_decisions(half.get_submodule(name), model.get_submodule(name), tokens, hw) as flips:
            with RoundingDepth() as depth:
                got = half.get_submodule(name)(tokens.half(), hw)
        assert flips <= MAX_FLIPS, f"{cfg} attention module {name}: fp16 flips {flips:.1%} of its discrete decisions"
        _check_stages(got, want, depth.of(got), f"{cfg} attention module {name} (local)")


@contextlib.contextmanager
def _pinned_decisions(half_module: torch.nn.Module, module: torch.nn.Module, tokens: torch.Tensor, hw: tuple):
    """Pin a half module's discrete decisions (routing's region choice, clustering's ids) to those of the fp32
    ``module`` on the same ``tokens`` for the duration; yields the fraction fp16 would have chosen differently (0.0
    for modules without such decisions)."""
    from yolo_attn.attention import routing
    from yolo_attn.attention.cluster import ClusterAttention

    q, k, _ = module.split_heads(tokens)
    qh, kh, _ = half_module.split_heads(tokens.half())
    if isinstance(module, routing.RoutingAttention):
        want = routing.routing_select(q, k, hw, module.regions, module.topk)
        got = routing.routing_select(qh, kh, hw, module.regions, module.topk)
        flips = float((want.sort(-1).values != got.sort(-1).values).any(-1).float().mean())
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(routing, "_select", lambda *args, **kwargs: want)
            yield flips
    elif isinstance(module, ClusterAttention):
        want = module.route(q, k)
        flips = float((half_module.route(qh, kh) != want).float().mean())
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(half_module, "route", lambda *args, **kwargs: want)
            yield flips
    else:
        yield 0.0


@contextlib.contextmanager
def _attention_calls(model: torch.nn.Module):
    """Record ``name -> (tokens, hw, output)`` of every attention module called during a forward."""
    calls, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, QKVAttentionBase):
            hooks.append(module.register_forward_hook(
                lambda m, args, out, name=name: calls.__setitem__(name, (args[0], tuple(args[1]), out))))
    try:
        yield calls
    finally:
        for hook in hooks:
            hook.remove()


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
_SOFTMAX = ("the softmax (kernel.attention_weights, and kernel.joint_softmax for axial's row and column) normalises in fp32 and rounds the weights back to the value "
            "dtype before the weighted sum; on CUDA the half softmax kernel accumulates in fp32 too, the weights "
            "tensor is what is wider")
_LINEAR = ("linear attention sums phi(k) v over all N tokens: at 80x80 the sums exceed fp16's range (65504), so "
           "linear_attention computes in fp32 and returns the value dtype")
_SORT_KEYS = ("cluster sort keys are integers (cluster_id * N + position) cast to fp32, exact below 2**24, so the "
              "sort exports as ONNX TopK; no activation passes through fp32")
_SINKHORN = ("the Sinkhorn normalisation of the [nb, nb] block logits: log P is of order log nb while the block "
             "choice depends on differences of ~1e-4, below fp16's resolution there (14 of 360 choices flipped, 2 now); "
             "the picked entries are cast back to the value dtype for the straight-through factor")
_PERFORMER = ("Performer's random features are exponentials, summed over all N tokens (phi(k)^T v, the normaliser): "
              "beyond fp16's range as for linear attention, so performer_attention computes in fp32 and returns the "
              "value dtype")
_ROUTING = ("the region-to-region affinity of routing attention (region means of q and k, their products, top-k): "
            "a discrete choice, made in fp32 so fp16 rounding does not flip near-ties as it did for Sinkhorn; only "
            "int64 region indices leave it, no activation passes through fp32")
#: (where, aten op) -> (reason, required input dtypes or None). ``where`` is the innermost yolo_attn frame; ``None``
#: as the op allows every op there. Anything not listed that produces float32 in a half model fails.
ALLOWED_FP32 = {
    ("attention/kernel.py:attention_weights", "aten._to_copy.default"): (_SOFTMAX, {"float16"}),
    ("attention/kernel.py:attention_weights", "aten._softmax.default"): (_SOFTMAX, {"float32"}),
    ("attention/kernel.py:joint_softmax", None): (_SOFTMAX, None),
    ("attention/linear.py:linear_attention", None): (_LINEAR, None),
    ("attention/linear.py:elu_feature_map", None): (_LINEAR, None),
    ("attention/cluster.py:_chunk_layout", "aten._to_copy.default"): (_SORT_KEYS, {"int64"}),
    ("attention/cluster.py:_chunk_layout", "aten.sort.default"): (_SORT_KEYS, {"float32"}),
    ("attention/sinkhorn.py:log_sinkhorn", None): (_SINKHORN, None),
    ("attention/performer.py:performer_attention", None): (_PERFORMER, None),
    ("attention/performer.py:favor_features", None): (_PERFORMER, None),
    ("attention/performer.py:logits", None): (_PERFORMER, None),
    ("attention/routing.py:_select", None): (_ROUTING, None),
    ("attention/routing.py:_region_means", None): (_ROUTING, None),
    ("attention/sinkhorn.py:sinkhorn_attention", "aten.gather.default"): (_SINKHORN, {"float32", "int64"}),
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
        half = copy.deepcopy(block).half()
        with RoundingDepth() as depth:
            y = half(x.half())
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    _check_stages(y, ref, depth.of(y), kind)


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
        half = copy.deepcopy(block).half()
        with RoundingDepth() as depth:
            y = half(x.half())
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    _check_stages(y, ref, depth.of(y), f"pos={pos}")


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


def test_sinkhorn_half_decisions():
    """A half Sinkhorn module picks the blocks its fp32 copy picks, but for near-ties of the sort logits themselves.

    The normalisation runs in fp32 (``log_sinkhorn``): over 10 random blocks (360 block choices), fp16 flips 2 choices
    (gaps below one rounding of the fp16 sort logits); with the normalisation in fp16 it flipped 14.
    """
    flipped = total = 0
    for seed in range(10):
        torch.manual_seed(seed)
        attn = _block("sinkhorn").attn.layers[0].attn.eval()
        x = torch.randn(2, HW[0] * HW[1], attn.dim)
        with torch.no_grad():
            _, want = attn(x, HW, return_mask=True)
            _, got = copy.deepcopy(attn).half()(x.half(), HW, return_mask=True)
        blocks = -(-x.shape[1] // attn.block_size)
        # a query block's row of the mask changes exactly when its picked block does
        rows = (got != want).any(-1).reshape(*want.shape[:2], -1)[..., :: attn.block_size]
        flipped, total = flipped + int(rows.sum()), total + rows.numel()
        assert rows.shape[-1] == blocks
    assert flipped <= 3, f"{flipped} of {total} Sinkhorn block choices flipped in fp16"
