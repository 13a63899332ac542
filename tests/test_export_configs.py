"""Every shipped config exports to ONNX and passes the ONNX Runtime parity check of the workflows (#7, item 6).

A freshly built model (scale n, no training) is saved under ``tmp_path`` and exported from there with
:func:`yolo_attn.workflows.export`, which writes next to the checkpoint and runs
:func:`yolo_attn.workflows.check_export_parity` on a synthetic image.
"""

from __future__ import annotations

import pytest
import torch

import yolo_attn
from yolo_attn import workflows
from yolo_attn.integration import CONFIG_DIR

CONFIGS = sorted(p.name.replace("yolov5-", "yolov5n-") if p.stem != "yolov5" else "yolov5n.yaml"
                 for p in CONFIG_DIR.glob("*.yaml"))
IMGSZ = 128  # P3 16x16, P4 8x8, P5 4x4: windows of 7 and sinkhorn blocks of 64 do not divide every map
TOLERANCE = 1e-2  # boxes are in pixels (up to ~IMGSZ); the workflows test measures ~1e-4 after training


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("cfg", CONFIGS)
def test_onnx_export_passes_runtime_parity(cfg, tmp_path, capsys):
    weights = tmp_path / f"{cfg[:-5]}.pt"
    yolo_attn.YOLO(cfg).save(weights)
    f, diff = workflows.export(weights, "onnx", imgsz=IMGSZ)
    assert f == tmp_path / f"{cfg[:-5]}.onnx" and f.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([weights.name, f.name])  # nothing else written
    assert diff is not None and diff < TOLERANCE, (cfg, diff)
    assert f"ONNX Runtime vs PyTorch on a {IMGSZ}x{IMGSZ} input" in capsys.readouterr().out


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("cfg", ["yolov5n-c3tr.yaml", "yolov5n-linear.yaml"])
def test_dynamic_export_runs_at_other_sizes(cfg, tmp_path):
    """What check_dynamic_export lets through really is size-generic: exported at 64, run at 96x128 in ORT."""
    import numpy as np
    import onnxruntime as ort

    weights = tmp_path / "m.pt"
    yolo_attn.YOLO(cfg).save(weights)
    f, _ = workflows.export(weights, "onnx", imgsz=64, dynamic=True, simplify=False, parity=False)
    session = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, 96, 128)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    model = yolo_attn.YOLO(str(weights)).model.float().eval()
    with torch.no_grad():
        want = model(x)[0].numpy()
    assert got.shape == want.shape == (1, 84, 12 * 16 + 6 * 8 + 3 * 4)
    assert np.abs(got - want).max() < 1e-2


def test_dynamic_export_refused_for_fixed_size_attention():
    model = yolo_attn.YOLO("yolov5n-window.yaml").model
    with pytest.raises(workflows.WorkflowError, match=r"dynamic=True: layer 13 C3Attn \(window\)"):
        workflows.check_dynamic_export(model)
