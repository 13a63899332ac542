"""Reliability and security: safe loading refuses code-running checkpoints, training is deterministic."""

from __future__ import annotations

import pathlib
import subprocess
import textwrap
import types

import torch

import yolo_attn
from conftest import PYTHON, subprocess_env


class _Payload:
    """Unpickling this runs code: it touches a marker file (harmless stand-in for an attack)."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def _child(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                          env=subprocess_env(**env))


def test_safe_load_refuses_code_running_checkpoint(tmp_path):
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.pt"
    model = yolo_attn.YOLO("yolov5n-c3tr.yaml").model
    torch.save({"model": model, "train_args": {}, "payload": _Payload(marker)}, crafted)

    safe = _child(f"""
        import yolo_attn
        from ultralytics import YOLO
        try:
            YOLO({str(crafted)!r})
        except Exception as e:
            print("REFUSED", type(e).__name__)
    """, ULTRALYTICS_SAFE_LOAD="1")
    assert "REFUSED" in safe.stdout, safe.stdout + safe.stderr
    assert not marker.exists()

    # control: the crafted file really runs code when loaded without the safe mode
    unsafe = _child(f"import torch; torch.load({str(crafted)!r}, weights_only=False)")
    assert unsafe.returncode == 0, unsafe.stderr
    assert marker.exists()


def _train_once(data, project, name) -> dict:
    model = yolo_attn.YOLO("yolov5n-c3tr.yaml")
    model.train(data=str(data), epochs=1, imgsz=64, batch=8, workers=0, device="cpu", project=str(project), name=name,
                exist_ok=True, seed=3, deterministic=True, plots=False, val=False, verbose=False)
    ckpt = torch.load(project / name / "weights" / "last.pt", weights_only=False)
    return {k: v.float() for k, v in ckpt["model"].state_dict().items()}


def test_same_seed_same_weights(shapes_data, tmp_path):
    a = _train_once(shapes_data, tmp_path, "a")
    b = _train_once(shapes_data, tmp_path, "b")
    assert a.keys() == b.keys()
    mismatched = [k for k in a if not torch.equal(a[k], b[k])]
    assert not mismatched, mismatched[:5]
    init = yolo_attn.YOLO("yolov5n-c3tr.yaml").model.state_dict()
    assert any(not torch.equal(a[k], init[k].float()) for k in a if "weight" in k)  # training changed weights


def test_amp_check_never_downloads_offline(monkeypatch, tmp_path):
    """On CUDA offline, ultralytics' AMP check would download reference weights; ours keeps AMP on without trying."""
    import ultralytics.utils as uutils
    import ultralytics.utils.checks as checks
    from yolo_attn.integration import _offline_aware_check_amp

    model = yolo_attn.YOLO("yolov5n-c3tr.yaml").model
    calls = []
    monkeypatch.setattr(checks, "check_amp", lambda m: calls.append(m) or False)
    monkeypatch.setattr(uutils, "ONLINE", False)
    monkeypatch.setattr(uutils, "WEIGHTS_DIR", tmp_path)
    assert _offline_aware_check_amp(model) is False and len(calls) == 1  # CPU: ultralytics decides (no AMP)
    class OnCuda(torch.nn.Module):  # reports a CUDA parameter without needing a GPU
        def parameters(self, recurse=True):
            yield types.SimpleNamespace(device=torch.device("cuda"))

    assert _offline_aware_check_amp(OnCuda()) is True and len(calls) == 1  # CUDA offline: skipped, AMP on
