"""The export matrix's parity cell (yolo_attn.bench.export_matrix.export_cell) reports what ONNX Runtime, run here
directly on the exported file, says: the max |difference| over the dynamic cell's inputs; and a reference that is
not the exported model (negative control) gives a large number.
"""

from __future__ import annotations

import copy
import re

import onnxruntime as ort
import pytest
import torch

import yolo_attn
from yolo_attn.bench.export_matrix import CELLS, DYNAMIC_RUNS, export_cell, randomise_weights


def _predictions(model: torch.nn.Module):
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x)[0]

    return run


@pytest.mark.usefixtures("one_thread")
def test_dynamic_onnx_cell_reports_runtime_parity_and_rejects_another_model(tmp_path, monkeypatch):
    weights = tmp_path / "local-random.pt"  # not an ultralytics asset name: nothing downloaded
    yolo = yolo_attn.YOLO("yolov5n-local.yaml")
    randomise_weights(yolo.model)
    yolo.save(weights)
    fused = copy.deepcopy(yolo_attn.YOLO(str(weights)).model).float().eval().fuse()
    cell = next(c for c in CELLS if c.name == "onnx dynamic")
    text = export_cell(weights, cell, 64, _predictions(fused))
    m = re.fullmatch(r"(\S+) \((.*)\)", text)
    assert m, text
    assert m.group(2) == ", ".join(f"{b}x{h}x{w}" for b, h, w in DYNAMIC_RUNS)
    session = ort.InferenceSession(str(weights.with_suffix(".onnx")), providers=["CPUExecutionProvider"])
    worst, moved, predict = 0.0, 0.0, _predictions(fused)
    for i, (b, h, w) in enumerate(DYNAMIC_RUNS):
        x = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(i))
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        expected = predict(x)
        worst = max(worst, float((got - expected).abs().max()))
        moved = max(moved, float((predict(torch.rand_like(x)) - expected).abs().max()))
    assert 0 < worst < 1e-3 < moved  # the export is right, and the output depends on the input
    assert float(m.group(1)) == pytest.approx(worst, rel=0.06)  # printed with two significant digits
    other = copy.deepcopy(fused)
    randomise_weights(other, seed=1)  # the same architecture, other weights: not what was exported
    monkeypatch.setattr(yolo_attn.integration.YOLO, "export", lambda self, **kwargs: weights.with_suffix(".onnx"))
    wrong = export_cell(weights, cell, 64, _predictions(other))  # the same file, not exported again
    assert float(wrong.split()[0]) > 1.0, wrong


def test_reasons_name_files_never_their_paths():
    from yolo_attn.bench.export_matrix import _reason

    text = _reason(RuntimeError("ERROR ❌ ncnn cannot load /tmp/yolo-attn-matrix-x1/m/m_ncnn_model (an operator)\nmore"))
    assert text == "RuntimeError: ncnn cannot load m_ncnn_model (an operator)"
    assert _reason(ValueError("1/2 and a/b stay")) == "ValueError: 1/2 and a/b stay"
