"""Every shipped config exports to ONNX and passes the ONNX Runtime parity check of the workflows (#7, item 6).

The parity check (:func:`yolo_attn.workflows.check_export_parity`) is only worth something where the outputs depend
on the input and on the attention: an untrained detector's outputs hardly do (real image vs zeros ~4e-5), so every
model here is first given weights that make them (:func:`conftest.randomize_detector`: BN statistics recalibrated on
shapes images, random BN affine, random Detect head), and each test asserts that dependence before it trusts a
small difference. Negative controls show that the same check rejects a wrong export (another attention mask, a graph
that ignores its input) in both formats it supports.

Tolerance: ``REL_TOL`` of the largest output magnitude (boxes, in pixels). Float32 has an epsilon of 1.2e-7;
ONNX Runtime and PyTorch sum convolutions and matmuls in different orders through ~60 layers whose BN gains reach
1.5; measured here: 1e-6 to 1.3e-5 of the output scale, 8e-5 for BoT. 3e-4 (~2,500 epsilon) leaves a 4x margin over
the worst and lies ~30x below what a wrong attention mask changes (~1e-2 of the scale).
"""

from __future__ import annotations

import pytest
import torch

import yolo_attn
from conftest import randomize_detector, shapes_images
from yolo_attn import workflows
from yolo_attn.attention.modules import Attention, QKVAttentionBase
from yolo_attn.configs import shipped

CONFIGS = shipped("n")
IMGSZ = 128  # P3 16x16, P4 8x8, P5 4x4: windows of 7 and sinkhorn blocks of 64 do not divide every map
REL_TOL = 3e-4  # of the output scale; see the module docstring


def randomized_checkpoint(cfg: str, path, seed: int = 0):
    """Save a :func:`randomize_detector` version of ``cfg`` (as ``YOLO.save`` does: fp16 weights) to ``path``."""
    yolo = yolo_attn.YOLO(cfg)
    randomize_detector(yolo.model, seed=seed, imgsz=IMGSZ)
    yolo.save(path)
    return path


def parity_input(imgsz: int = IMGSZ) -> torch.Tensor:
    """The input :func:`workflows.check_export_parity` feeds (shapes image, seed 0), as a tensor."""
    return shapes_images(1, imgsz, seed=0)


def _outputs(model, x):
    with torch.no_grad():
        return model(x)[0]


def _without_attention(model, x):
    """Output with every attention module's output replaced by zeros (residual paths stay)."""
    hooks = [m.register_forward_hook(lambda mod, inp, out: out * 0) for m in model.modules()
             if isinstance(m, QKVAttentionBase)]
    try:
        return _outputs(model, x), len(hooks)
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("cfg", CONFIGS)
def test_onnx_export_passes_runtime_parity(cfg, tmp_path, capsys):
    weights = randomized_checkpoint(cfg, tmp_path / f"{cfg[:-5]}.pt")
    model = yolo_attn.YOLO(str(weights)).model.float().eval()
    x = parity_input()
    ref = _outputs(model, x)
    scale = float(ref.abs().max())
    tol = REL_TOL * scale
    assert float((ref - _outputs(model, torch.zeros_like(x))).abs().max()) > 0.05 * scale  # depends on the image
    assert float(ref[:, 4:].max() - ref[:, 4:].min()) > 0.5  # class scores are not pinned near 0 or 1
    no_attn, n_attn = _without_attention(model, x)
    assert (n_attn == 0) == (cfg == "yolov5n.yaml")
    if n_attn:
        assert float((ref - no_attn).abs().max()) > 50 * tol  # ... and on the attention, far above the tolerance
    f, diff = workflows.export(weights, "onnx", imgsz=IMGSZ)
    assert f == tmp_path / f"{cfg[:-5]}.onnx" and f.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([weights.name, f.name])  # nothing else written
    assert diff is not None and diff < tol, (cfg, diff, scale)
    assert f"ONNX Runtime vs PyTorch on a {IMGSZ}x{IMGSZ} input" in capsys.readouterr().out


def _wrong_mask_checkpoint(weights, path):
    """The same weights with every mask pattern replaced by full attention (a wrong-mask export)."""
    yolo = yolo_attn.YOLO(str(weights))
    changed = 0
    for m in yolo.model.modules():
        if isinstance(m, Attention) and m.pattern != "full":
            m.pattern, m.pattern_options, m.rel_pos_bias = "full", {}, None
            changed += 1
    assert changed
    yolo.save(path)
    return path


def _blind_checkpoint(weights, path):
    """The same weights with the first convolution zeroed: its export is a graph that ignores its input."""
    yolo = yolo_attn.YOLO(str(weights))
    with torch.no_grad():
        yolo.model.model[0].conv.weight.zero_()
    yolo.save(path)
    return path


@pytest.mark.usefixtures("one_thread")
def test_parity_check_rejects_wrong_exports(tmp_path):
    """Negative controls: the check that passes the right export fails a wrong mask or a blind graph, ONNX and
    TorchScript alike; the TorchScript parity itself holds on the randomized model."""
    good = randomized_checkpoint("yolov5n-local.yaml", tmp_path / "good.pt")
    (tmp_path / "wrong").mkdir()
    (tmp_path / "blind").mkdir()
    wrong = _wrong_mask_checkpoint(good, tmp_path / "wrong" / "good.pt")
    blind = _blind_checkpoint(good, tmp_path / "blind" / "good.pt")
    scale = float(_outputs(yolo_attn.YOLO(str(good)).model.float().eval(), parity_input()).abs().max())
    tol = REL_TOL * scale
    ts, diff = workflows.export(good, "torchscript", imgsz=IMGSZ)
    assert diff is not None and diff < tol, (diff, scale)
    for bad, fmt in ((wrong, "onnx"), (wrong, "torchscript"), (blind, "onnx")):
        f, _ = workflows.export(bad, fmt, imgsz=IMGSZ, parity=False, **({"simplify": False} if fmt == "onnx" else {}))
        assert f.parent == bad.parent
        bad_diff = workflows.check_export_parity(good, f, imgsz=IMGSZ)
        assert bad_diff > 10 * tol, (bad.parent.name, fmt, bad_diff, tol)
