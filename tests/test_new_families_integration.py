"""The attention kinds of issue 14 end to end: YAML errors, half precision, ONNX export at any size, show, bench, info.

Numerics against independent references live in ``test_new_families.py``; the every-kind tests of
``test_blocks.py`` and ``test_stability.py`` cover these kinds too.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from yolo_attn.attention import Attention, PerformerAttention, ReduceAttention, RoutingAttention
from yolo_attn.blocks import C3Attn, attention_kinds, build_attention

DIM, HEADS = 32, 2
MODULES = {
    "area": lambda: Attention(DIM, HEADS, pattern="area", area=4),
    "reduce": lambda: ReduceAttention(DIM, HEADS, ratio=3),
    "reduce-pool": lambda: ReduceAttention(DIM, HEADS, ratio=2, reducer="pool"),
    "performer": lambda: PerformerAttention(DIM, HEADS, num_features=16),
    "routing": lambda: RoutingAttention(DIM, HEADS, regions=3, topk=2),
}
TRACED, OTHER = (1, DIM, 8, 6), (2, DIM, 7, 11)  # the second size is divisible by no area / ratio / region count


class _NCHW(torch.nn.Module):
    """Map in, map out: ``(h, w)`` comes from the input's shape, as in a YOLO block (0-d tensors while tracing)."""

    def __init__(self, attn: torch.nn.Module) -> None:
        super().__init__()
        self.attn = attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return self.attn(x.flatten(2).transpose(1, 2), (h, w)).transpose(1, 2).reshape(b, c, h, w)


def test_the_new_kinds_are_yaml_kinds():
    assert {"area", "reduce", "performer", "routing"} <= set(attention_kinds())


@pytest.mark.parametrize(
    ("kind", "options", "match"),
    [
        ("reduce", {"ratio": 0}, r"ratio=0 must be an int >= 1"),
        ("reduce", {"ratio": 2.5}, r"ratio=2.5 must be an int >= 1"),
        ("reduce", {"reducer": "max"}, r"reducer='max' is not one of conv, pool"),
        ("reduce", {"ratoi": 2}, r"unknown option 'ratoi' for reduce; allowed: .*ratio, reducer"),
        ("performer", {"num_features": 0}, r"num_features=0 must be an int >= 1"),
        ("performer", {"redraw": -1}, r"redraw=-1 must be an int >= 0"),
        ("performer", {"attn_drop": 0.1}, r"attn_drop=0.1 is not supported .*allowed: 0.0"),
        ("routing", {"regions": 4, "topk": 20}, r"topk=20 must be an int in \[1, 16\]"),
        ("routing", {"regions": 0}, r"regions=0 must be an int >= 1"),
        ("routing", {"pos": "rel"}, r"pos='rel' is supported for .*; for routing use none"),
        ("area", {"area": 0}, r"area=0 must be an int >= 1"),
        ("area", {"area": "4"}, r"area='4' must be an int >= 1"),
        ("area", {"window": 3}, r"unknown option 'window' for area; allowed: area, attn_drop"),
    ],
)
def test_bad_options_give_one_line_naming_value_and_allowed(kind, options, match):
    with pytest.raises(ValueError, match=match) as err:
        build_attention(64, kind, options)
    assert "\n" not in str(err.value)


def test_a_bad_option_in_a_model_config_names_the_layer():
    from yolo_attn.bench.models import build_model
    from yolo_attn.integration import YamlConfigError

    cfg = {"nc": 2, "scale": "n", "scales": {"n": [0.33, 0.25, 1024]},
           "backbone": [[-1, 1, "Conv", [64, 3, 2]], [-1, 1, "C3Attn", [64, "routing", {"topk": 99}]]],
           "head": [[[1], 1, "Detect", ["nc"]]]}
    with pytest.raises(YamlConfigError, match=r"layer 1 \(C3Attn\).*topk=99 must be an int in \[1, 64\]"):
        build_model(cfg)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_half_and_autocast_on_cpu(name):
    module = MODULES[name]().eval()
    x = torch.randn(2, 7 * 9, DIM)
    with torch.no_grad():
        ref = module(x, (7, 9))
        half = MODULES[name]().eval()
        half.load_state_dict(module.state_dict())
        out = half.half()(x.half(), (7, 9))  # buffers (performer's features) follow the module to fp16
        assert out.dtype == torch.float16 and torch.isfinite(out).all()
        torch.testing.assert_close(out.float(), ref, atol=5e-3, rtol=0)
        for dtype, atol in ((torch.float16, 5e-3), (torch.bfloat16, 3e-2)):
            with torch.autocast("cpu", dtype=dtype):
                out = module(x, (7, 9))
            assert out.dtype == dtype and torch.isfinite(out).all()
            torch.testing.assert_close(out.float(), ref, atol=atol, rtol=0)


@pytest.mark.parametrize("kind", ["area", "reduce", "performer", "routing"])
def test_blocks_run_in_half_precision(kind):
    block = C3Attn(32, 32, 1, kind, {"heads": 2}).eval()
    x = torch.randn(1, 32, 9, 10)
    with torch.no_grad():
        ref = block(x)
        out = block.half()(x.half())
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=0)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::UserWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize("name", sorted(MODULES))
def test_onnx_and_trace_run_at_other_sizes(name, tmp_path):
    """One export at 8x6 (batch 1), dynamic batch / height / width, checked in ONNX Runtime at 8x6 and at 7x11
    (batch 2); the TorchScript trace likewise. Nothing derived from the map size is a constant of the graph."""
    import onnxruntime as ort

    model = _NCHW(MODULES[name]()).eval()
    traced_x, other_x = torch.randn(TRACED), torch.randn(OTHER)
    path = tmp_path / f"{name}.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (traced_x,), str(path), opset_version=17, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}})
        traced = torch.jit.trace(model, (traced_x,))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        for x in (traced_x, other_x):
            expected = model(x)
            (got,) = session.run(None, {"x": x.numpy()})
            torch.testing.assert_close(torch.from_numpy(got), expected, atol=1e-4, rtol=0)
            torch.testing.assert_close(traced(x), expected, atol=1e-5, rtol=0)


def test_show_draws_area_and_routing_masks(tmp_path):
    from yolo_attn.attention.routing import example_routing_mask
    from yolo_attn.show import _pattern_and_mask, show_pattern

    for name, options in (("area", {"area": 3}), ("routing", {"regions": 3, "topk": 2})):
        path = show_pattern(name, (6, 7), path=tmp_path / f"{name}.png", **options)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    _, resolved, mask = _pattern_and_mask("routing", (6, 7), {"regions": 3, "topk": 2})
    assert resolved == {"regions": 3, "topk": 2, "seed": 0}
    assert torch.equal(mask, example_routing_mask(6, 7, regions=3, topk=2, seed=0)) and not mask.all()
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['window'\] for routing; allowed: \['regions'"):
        show_pattern("routing", (6, 7), path=tmp_path / "x.png", window=3)


def test_bench_attention_has_rows_for_the_new_kinds_and_ultralytics_area_peers(tmp_path):
    from yolo_attn.bench.attention import AREA_PEERS, run_attention_benchmark

    kinds = ["reduce", "performer", "routing", "area"]
    rows = run_attention_benchmark([64], kinds, repeats=1, out_dir=tmp_path, progress=False, flex=False)
    by_name = {r["contender"]: r for r in rows}
    for name in [*kinds, *AREA_PEERS]:
        assert by_name[name]["median_ms"] > 0 and by_name[name]["peak_MB"] > 0, name
    assert any("A2C2f" in name for name in by_name) and any("AAttn" in name for name in by_name)
    report = (tmp_path / "attention.md").read_text()
    assert "reduce (r=4) >= 8x faster than full (80x80)" in report
    assert "routing (8x8 regions, top 4) >= 5x faster than full (80x80)" in report


def test_info_counts_keys_of_the_new_kinds():
    from yolo_attn.inspect import _call_cost

    x = torch.randn(1, 80 * 78, 64)
    expected = {
        ReduceAttention(64, 2, ratio=4): 20 * 20,
        PerformerAttention(64, 2, num_features=32): 32,
        RoutingAttention(64, 2, regions=8, topk=4): 4 * 10 * 10,
        Attention(64, 2, pattern="area", area=4): 80 * 78 // 4,
    }
    for module, keys in expected.items():
        cost = _call_cost(module, (x, (80, 78)), batch=1)
        assert cost["keys"] == keys, type(module).__name__
        assert cost["flops"] == 2 * 80 * 78 * keys * 32 * 2 * 2
