"""Export of the ``Attention`` module for every pattern: ONNX (legacy TorchScript exporter, opset 17) run by
ONNX Runtime, and ``torch.jit.trace``.

torch 2.15's ``torch.onnx.export`` defaults to the dynamo exporter (``dynamo=True``); we use ``dynamo=False``
(still available), as ultralytics does. Index plans are computed in the graph from the input size, so every pattern
exports with dynamic ``H, W`` (tests/test_dynamic_export.py runs them at other sizes).
"""

from __future__ import annotations

import warnings

import onnx
import onnxruntime
import pytest
import torch

from yolo_attn.attention import Attention

PATTERNS = {
    "full": {},
    "local": {"window": 3},
    "dilated": {"window": 3, "dilation": 2},
    "window": {"window": 4, "shift": True},
    "axial": {},
    "local1d": {"window": 4},
    "dilated1d": {"window": 2, "dilation": 2},
    "global": {"window": 3, "global_idx": [0, 7]},
    "custom": {"mask": torch.eye(30, dtype=torch.bool) | (torch.rand(30, 30, generator=torch.Generator().manual_seed(0)) < 0.2)},
    "mixed": {"heads": {"local": 1, "window": 1}, "window": 3},
}


class _NCHW(torch.nn.Module):
    """Feature map in, feature map out: the map size comes from the input shape, as in a YOLO block."""

    def __init__(self, attn: Attention):
        super().__init__()
        self.attn = attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return self.attn(x.flatten(2).transpose(1, 2), (h, w)).transpose(1, 2).reshape(b, c, h, w)


def _model(pattern, rel_pos=False):
    torch.manual_seed(0)
    return _NCHW(Attention(32, num_heads=2, pattern=pattern, rel_pos=rel_pos, **PATTERNS[pattern])).eval()


def _onnx(model, x, path, dynamic=False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), opset_version=17, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}} if dynamic else None)
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_onnx_and_trace_match_pytorch(pattern, tmp_path):
    rel_pos = pattern in ("local", "dilated", "window", "full")
    model, x = _model(pattern, rel_pos), torch.randn(1, 32, 5, 6)
    with torch.no_grad():
        expected = model(x)
        session = _onnx(model, x, tmp_path / f"{pattern}.onnx")
        got = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, (x,))
        torch.testing.assert_close(traced(x), expected, atol=1e-5, rtol=0)


def test_full_exports_with_dynamic_hw(tmp_path):
    model = _model("full")
    with torch.no_grad():
        session = _onnx(model, torch.randn(1, 32, 5, 6), tmp_path / "full.onnx", dynamic=True)
        for shape in [(1, 32, 5, 6), (2, 32, 7, 3), (1, 32, 12, 9)]:
            x = torch.randn(shape)
            got = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
            torch.testing.assert_close(got, model(x), atol=1e-4, rtol=0)


def test_exported_softmax_never_sees_a_logit_far_below_its_row_max(tmp_path):
    # ONNX Runtime's CPU softmax makes a denormal of every logit below row max - 87 (a masked tile slot), and x86
    # computes with denormals many times slower; the ONNX form floors the logits at row max - 40 and still matches.
    model, x = _model("local", rel_pos=True), torch.randn(1, 32, 9, 10) * 3
    path = tmp_path / "local.onnx"
    _onnx(model, x, path)
    graph = onnx.load(str(path))
    inputs = [node.input[0] for node in graph.graph.node if node.op_type == "Softmax"]
    assert inputs, "no Softmax in the exported graph"
    graph.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in inputs)
    session = onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    y, *logits = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(y), model(x), atol=1e-4, rtol=0)
    for t in logits:
        gap = torch.from_numpy(t) - torch.from_numpy(t).amax(-1, keepdim=True)
        assert gap.min() >= -40.001, f"softmax input {gap.min():.3g} below its row max"
