"""Dynamic export: one traced graph runs at every input size (#13, item 1).

Every pattern's index plan is computed inside the graph from the input's symbolic size, so a file exported once
runs at any batch and image size. Checked at two levels:

- attention: ``attend`` for every pattern, traced (``torch.jit.trace``) and exported (``torch.onnx.export``,
  TorchScript exporter as ultralytics uses it) at one map size, run at map sizes that are not multiples of any
  window or tile, against the float64 reference over the pattern's specification mask; the learned families and
  positional encodings (block level) against eager PyTorch;
- model: every shipped config (scale n) exported with ``dynamic=True`` through the Python API (one config through
  the ``yolo-attn export`` command) to ONNX and TorchScript, run in ONNX Runtime / TorchScript at batch 1, 2, 3 and
  sizes 320x320, 384x640, 224x352, 800x800 within :data:`TOLERANCE` of PyTorch.

Random-init detectors barely depend on their input, which would let a wrong graph pass.
:func:`~yolo_attn.bench.export_matrix.randomise_weights` draws weights and batch-norm statistics at a stated
scale, and each model test asserts that its outputs move with the input. Negative controls show the same checks
reject a graph traced for a fixed size and a deliberately wrong plan.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

import yolo_attn
from reference import naive_rel_bias, reference_attention
from yolo_attn.attention import attend, pattern_mask, tiling
from yolo_attn.bench.export_matrix import randomise_weights
from yolo_attn.blocks import TransformerStack
from yolo_attn.cli import entrypoint
from yolo_attn.configs import shipped

CONFIGS = shipped("n")
#: (batch, height, width) each exported model runs at: every batch 1-3 and every size of the issue, paired.
RUNS = [(1, 320, 320), (2, 384, 640), (3, 224, 352), (1, 800, 800)]
EXPORT_IMGSZ = 96  # traced at 96 (maps 12, 6, 3): every run size differs from it
TOLERANCE = 1e-3  # max |exported - PyTorch| over boxes (pixels, up to 800) and class scores
TRACED_HW, OTHER_HW = (6, 7), [(11, 5), (3, 13), (9, 9)]  # attention maps: none a multiple of a window or tile


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def max_error(run, x: torch.Tensor, expected: torch.Tensor) -> float:
    """The parity check of this file: max |run(x) - expected|, or inf when the runtime rejects the input."""
    try:
        got = torch.as_tensor(np.asarray(run(x)), dtype=torch.float64)
    except Exception:  # noqa: BLE001 - a runtime error (e.g. a shape baked into the graph) fails the check
        return float("inf")
    if got.shape != expected.shape:
        return float("inf")
    return float((got - expected.double()).abs().max())


def onnx_runner(model: torch.nn.Module, example: torch.Tensor, path) -> callable:
    """Export ``model`` with dynamic batch / height / width (TorchScript-based exporter) and run it in ONNX Runtime."""
    _quiet(torch.onnx.export, model, (example,), str(path), opset_version=17, dynamo=False, input_names=["x"],
           output_names=["y"], dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}, "y": {0: "b", 2: "n"}})
    session = _session(path)
    return lambda x: session.run(None, {"x": x.numpy()})[0]


def _session(path) -> ort.InferenceSession:
    """One ONNX Runtime thread without spin-waiting: the tests count CPU time, not wall time."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def trace_runner(model: torch.nn.Module, example: torch.Tensor) -> callable:
    """``torch.jit.trace`` as ultralytics' TorchScript export calls it, then run the traced module."""
    traced = _quiet(torch.jit.trace, model, (example,), strict=False, check_trace=False)
    return lambda x: traced(x).detach()


# ------------------------------------------------------------------------------------------------------ attention
HEADS, HEAD_DIM, TOKENS = 2, 4, 2
PATTERNS = {
    "local": ("local", {"window": 4}),  # even window: reaches 2 before, 1 after
    "dilated": ("dilated", {"window": 3, "dilation": 2}),
    "local1d": ("local1d", {"window": 4}),
    "dilated1d": ("dilated1d", {"window": 2, "dilation": 3}),
    "window_shift": ("window", {"window": 4, "shift": True}),
    "window_clamped": ("window", {"window": 8, "shift": 4}),  # window > some maps: clamped, shift dropped there
    "axial": ("axial", {}),
    "global": ("global", {"base": "local", "window": 3, "global_idx": [0, 7]}),
    "global_tokens": ("global", {"base": "dilated", "window": 3, "num_global_tokens": TOKENS, "global_idx": [2]}),
    "mixed": ("mixed", {"heads": {"local": 1, "axial": 1}, "window": 3}),
    "full_rel": ("full", {"rel_pos_bias": (3, 3)}),
    "local_rel": ("local", {"window": 3, "rel_pos_bias": (3, 3)}),
    "dilated_rel": ("dilated", {"window": 3, "dilation": 2, "rel_pos_bias": (5, 5)}),
    "window_rel": ("window", {"window": 4, "shift": 2, "rel_pos_bias": (4, 4)}),
}


class OnMap(torch.nn.Module):
    """``[B, 3 * heads * d, H, W]`` map -> q, k, v -> ``attend`` with the map size read from the input shape.

    Args:
        pattern: Pattern name.
        options: Pattern options; ``rel_pos_bias=(a, b)`` adds a random ``[heads, 2a-1, 2b-1]`` table.
        bake: Hand ``attend`` the size as Python ints, which fixes it in a traced graph (negative control).
    """

    def __init__(self, pattern: str, options: dict, bake: bool = False) -> None:
        super().__init__()
        self.pattern, self.options, self.bake = pattern, dict(options), bake
        self.tokens = options.get("num_global_tokens", 0)
        extent = self.options.pop("rel_pos_bias", None)
        g = torch.Generator().manual_seed(1)
        self.register_buffer("table", None if extent is None else torch.randn(HEADS, 2 * extent[0] - 1,
                                                                              2 * extent[1] - 1, generator=g))
        self.register_buffer("extra", torch.randn(1, HEADS, self.tokens, 3 * HEAD_DIM, generator=g))

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        t = x.flatten(2).transpose(1, 2).reshape(b, -1, HEADS, 3 * HEAD_DIM).transpose(1, 2)
        t = torch.cat([self.extra.expand(b, -1, -1, -1), t], dim=2)
        return t.split(HEAD_DIM, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        hw = (int(h), int(w)) if self.bake else (h, w)
        q, k, v = self.qkv(x)
        return attend(q, k, v, self.pattern, hw=hw, rel_pos_bias=self.table, **self.options)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """Dense float64 attention under the specification mask (and the naive relative bias)."""
        h, w = x.shape[2:]
        q, k, v = self.qkv(x)
        bias = None if self.table is None else naive_rel_bias(self.table.double(), h, w)
        return reference_attention(q, k, v, pattern_mask(self.pattern, (h, w), **self.options), bias)


def _map(hw, batch=1, seed=0):
    return torch.randn(batch, 3 * HEADS * HEAD_DIM, *hw, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("case", sorted(PATTERNS))
def test_attend_traced_once_runs_at_every_size(case, tmp_path):
    module = OnMap(*PATTERNS[case]).eval()
    example = _map(TRACED_HW)
    runners = {"torchscript": trace_runner(module, example), "onnx": onnx_runner(module, example, tmp_path / "a.onnx")}
    for i, hw in enumerate([TRACED_HW, *OTHER_HW]):
        x = _map(hw, batch=1 + i % 2, seed=i)
        expected = module.reference(x)
        for name, run in runners.items():
            assert max_error(run, x, expected) < 1e-5, (case, name, hw)


BLOCKS = {
    "axial_block": ("axial", {}),  # a Linear right after attention: output shapes must stay symbolic
    "cluster_kmeans": ("cluster", {"num_clusters": 3}),  # chunk size ceil(N / K) follows the map
    "cluster_lsh": ("cluster", {"num_clusters": 4, "router": "lsh"}),
    "sinkhorn": ("sinkhorn", {"block_size": 8}),  # ceil(N / b) blocks follow the map
    "tokens": ("tokens", {"num_global_tokens": 2, "window": 3}),
    "linear": ("linear", {}),
    "pos_sincos": ("local", {"window": 3, "pos": "sincos"}),
    "pos_learned": ("dilated", {"window": 3, "dilation": 2, "pos": "learned"}),  # interpolated to the map
    "pos_rel": ("window", {"window": 4, "shift": 2, "pos": "rel"}),
    "pos_cpe": ("mixed", {"heads": {"local": 1, "dilated": 1, "axial": 1}, "window": 3, "dilation": 2, "pos": "cpe"}),
}


@pytest.mark.parametrize("case", sorted(BLOCKS))
def test_blocks_learned_families_and_positional_encodings_traced_once(case, tmp_path):
    kind, options = BLOCKS[case]
    torch.manual_seed(0)
    block = TransformerStack(24, 1, kind, {"heads": 3, **options}).eval()
    for p in block.parameters():  # beyond init scale, so positions and routing matter
        torch.nn.init.normal_(p, std=0.5)
    example = torch.randn(1, 24, *TRACED_HW)
    with torch.no_grad():
        runners = {"torchscript": trace_runner(block, example),
                   "onnx": onnx_runner(block, example, tmp_path / "b.onnx")}
        for i, hw in enumerate([TRACED_HW, *OTHER_HW]):
            x = torch.randn(1 + i % 2, 24, *hw)
            expected = block(x)
            for name, run in runners.items():
                assert max_error(run, x, expected) < 1e-4, (case, name, hw)


def test_negative_controls_a_fixed_size_graph_and_a_wrong_plan_are_rejected(tmp_path, monkeypatch):
    """The checks above fail for what they must catch: a size baked into the graph, a plan off by a little."""
    module = OnMap("local", {"window": 3}).eval()
    baked = OnMap("local", {"window": 3}, bake=True).eval()
    example, other = _map(TRACED_HW), _map(OTHER_HW[0], seed=1)
    for run in (trace_runner(baked, example), onnx_runner(baked, example, tmp_path / "baked.onnx")):
        assert max_error(run, example, module.reference(example)) < 1e-5  # right at the traced size ...
        assert max_error(run, other, module.reference(other)) > 1e-2  # ... wrong (or refused) at another

    def one_too_wide(length, window, dilation, tile, build=tiling.neighbourhood_axis):
        return build(length, window + 1, dilation, tile)

    with monkeypatch.context() as patch:
        patch.setattr(tiling, "neighbourhood_axis", one_too_wide)
        runs = (trace_runner(module, example), onnx_runner(module, example, tmp_path / "wrong.onnx"))
    for run in runs:
        assert max_error(run, other, module.reference(other)) > 1e-2


def test_traced_graph_is_one_chunk_whatever_the_eager_chunking(tmp_path, monkeypatch):
    """Eager runs split the tiles into chunks (forced here: one tile per chunk); a traced graph must not, or the
    traced tile count becomes a constant of the graph. Traced with chunking forced, it still runs at every size."""
    monkeypatch.setattr(tiling, "CHUNK_LOGITS", 1)
    module = OnMap(*PATTERNS["global"]).eval()
    example = _map(TRACED_HW)
    runners = {"eager": module, "torchscript": trace_runner(module, example),
               "onnx": onnx_runner(module, example, tmp_path / "chunked.onnx")}
    for i, hw in enumerate([TRACED_HW, *OTHER_HW]):
        x = _map(hw, batch=1 + i % 2, seed=i)
        expected = module.reference(x)
        for name, run in runners.items():
            assert max_error(run, x, expected) < 1e-5, (name, hw)


def _op_types(path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}


FIXED_CASES = ["local", "dilated", "window_shift", "global_tokens", "local_rel", "mixed"]


@pytest.mark.parametrize("case", FIXED_CASES)
def test_fixed_size_trace_has_the_plans_as_constants(case, tmp_path):
    """``fixed_sizes()`` (static exports): the same exact outputs at the traced size, with no plan arithmetic in the
    graph (no ``Range``: the index plans are constants); the same module traced without it computes its plans in
    the graph (control). A fixed graph is, by design, for its traced size only."""
    module = OnMap(*PATTERNS[case]).eval()
    example, other = _map(TRACED_HW), _map(OTHER_HW[0], seed=1)
    expected = module.reference(example)
    with tiling.fixed_sizes():
        static = tmp_path / "static.onnx"
        _quiet(torch.onnx.export, module, (example,), str(static), opset_version=17, dynamo=False,
               input_names=["x"], output_names=["y"])
        traced = trace_runner(module, example)
    session = _session(static)
    for run in (traced, lambda x: session.run(None, {"x": x.numpy()})[0]):
        assert max_error(run, example, expected) < 1e-5, case
    assert max_error(traced, other, module.reference(other)) > 1e-2  # the trace holds the one size it saw
    assert "Range" not in _op_types(static)
    with tiling.fixed_sizes(enabled=False):
        onnx_runner(module, example, tmp_path / "dynamic.onnx")
    assert "Range" in _op_types(tmp_path / "dynamic.onnx")
    assert not tiling.symbolic_sizes()


# ---------------------------------------------------------------------------------------------------------- model
def _image(batch, h, w, seed):
    return torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _check_model(model: torch.nn.Module, files: dict) -> None:
    """Every exported file within TOLERANCE of PyTorch at every run size; the outputs depend on the input.

    PyTorch here is the model as the exporter traces it: Conv + BatchNorm fused (``model.fuse()``), so the check
    measures the export alone (fusing itself moves boxes by up to ~1e-3 px at this weight scale).
    """
    runners = {}
    for fmt, f in files.items():
        if fmt == "onnx":
            session = _session(f)
            runners[fmt] = lambda x, s=session: s.run(None, {s.get_inputs()[0].name: x.numpy()})[0]
        else:
            ts = torch.jit.load(str(f), map_location="cpu")
            runners[fmt] = lambda x, m=ts: (lambda y: y[0] if isinstance(y, (list, tuple)) else y)(m(x))
    model = copy.deepcopy(model).float().eval().fuse()
    with torch.no_grad():
        for i, (batch, h, w) in enumerate(RUNS):
            x = _image(batch, h, w, seed=i)
            expected = model(x)[0]
            assert expected.shape[:2] == (batch, 84)
            if i == 0:  # non-vacuity: another image moves boxes (pixels) and class scores
                moved = (model(_image(batch, h, w, seed=99))[0] - expected).abs()
                assert moved[:, :4].max() > 100 * TOLERANCE and moved[:, 4:].max() > 0.05, "output ignores the input"
            for fmt, run in runners.items():
                err = max_error(run, x, expected)
                assert err < TOLERANCE, (fmt, (batch, h, w), err)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("cfg", CONFIGS)
def test_every_config_exports_one_file_for_every_size(cfg, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # ultralytics writes exports of an in-memory model to the working directory
    yolo = yolo_attn.YOLO(cfg)
    randomise_weights(yolo.model)
    if cfg == "yolov5n-window.yaml":  # the command: export a checkpoint, printed parity included
        weights = tmp_path / "window.pt"
        yolo.save(weights)
        assert entrypoint(["export", f"model={weights}", "format=onnx", "dynamic=True", f"imgsz={EXPORT_IMGSZ}"]) == 0
        assert "ONNX Runtime vs PyTorch" in capsys.readouterr().out
        yolo = yolo_attn.YOLO(str(weights))
        onnx_file = tmp_path / "window.onnx"
    else:
        onnx_file = _quiet(yolo.export, format="onnx", dynamic=True, imgsz=EXPORT_IMGSZ, simplify=False)
    ts_file = _quiet(yolo.export, format="torchscript", dynamic=True, imgsz=EXPORT_IMGSZ)
    _check_model(yolo.model, {"onnx": onnx_file, "torchscript": ts_file})


@pytest.mark.usefixtures("one_thread")
def test_static_export_bakes_the_plans_and_dynamic_export_computes_them(tmp_path, monkeypatch):
    """``YOLO.export`` without ``dynamic`` (ultralytics' default) traces one size: plans are graph constants (no
    ``Range``), parity holds at the export size; with ``dynamic=True`` the same model computes them in the graph."""
    monkeypatch.chdir(tmp_path)
    yolo = yolo_attn.YOLO("yolov5n-local.yaml")
    randomise_weights(yolo.model)
    static = _quiet(yolo.export, format="onnx", imgsz=EXPORT_IMGSZ, simplify=False)
    assert "Range" not in _op_types(static)
    session = _session(static)
    x = _image(1, EXPORT_IMGSZ, EXPORT_IMGSZ, seed=0)
    with torch.no_grad():
        expected = copy.deepcopy(yolo.model).float().eval().fuse()(x)[0]
    assert max_error(lambda t: session.run(None, {"images": t.numpy()})[0], x, expected) < TOLERANCE
    dynamic = _quiet(yolo.export, format="onnx", dynamic=True, imgsz=EXPORT_IMGSZ, simplify=False)
    assert "Range" in _op_types(dynamic)


@pytest.mark.usefixtures("one_thread")
def test_model_check_rejects_a_wrong_plan(tmp_path, monkeypatch):
    """Negative control at model level: local attention exported with windows one wider fails the same check."""
    monkeypatch.chdir(tmp_path)
    yolo = yolo_attn.YOLO("yolov5n-local.yaml")
    randomise_weights(yolo.model)

    def one_too_wide(length, window, dilation, tile, build=tiling.neighbourhood_axis):
        return build(length, window + 1, dilation, tile)

    with monkeypatch.context() as patch:
        patch.setattr(tiling, "neighbourhood_axis", one_too_wide)
        onnx_file = _quiet(yolo.export, format="onnx", dynamic=True, imgsz=EXPORT_IMGSZ, simplify=False)
    tiling.tile_plan.cache_clear()  # the exporter's eager dry run cached plans built by the patched function
    with pytest.raises(AssertionError, match="onnx"):
        _check_model(yolo.model, {"onnx": onnx_file})
