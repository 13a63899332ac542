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


@pytest.mark.parametrize("cfg", CONFIGS)
def test_onnx_export_passes_runtime_parity(cfg, tmp_path, capsys):
    torch.set_num_threads(1)
    weights = tmp_path / f"{cfg[:-5]}.pt"
    yolo_attn.YOLO(cfg).save(weights)
    f, diff = workflows.export(weights, "onnx", imgsz=IMGSZ)
    assert f == tmp_path / f"{cfg[:-5]}.onnx" and f.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([weights.name, f.name])  # nothing else written
    assert diff is not None and diff < TOLERANCE, (cfg, diff)
    assert f"ONNX Runtime vs PyTorch on a {IMGSZ}x{IMGSZ} input" in capsys.readouterr().out
