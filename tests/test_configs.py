"""Every shipped attention config: builds and runs forward at every scale, backward with a gradient for every
parameter, fuse()/info(), full attention never at P3, one training epoch on generated data.

What depends on the scale (widths, heads, repeat counts, C3k2's c3k at m/l/x) is checked at every scale on small
inputs (128x128 and 96x160: maps of 16x16 / 12x20 at P3, down to 4x4 / 3x5 at P5, none a multiple of every window);
what depends on the map size (index plans, padding, region / stripe / cell sizes) at scale n at 640x640 (80x80 at P3)
and 320x416. A forward of scale x at 640 costs ~15 CPU-seconds and checks nothing that these two do not.
"""

from __future__ import annotations


import copy

import pytest
import torch
import yaml

import yolo_attn
from conftest import CONFIGS, REPO, randomize_detector, shapes_images
from ultralytics.nn.tasks import DetectionModel
from yolo_attn.configs import family, scaled, shipped

ATTN_CONFIGS = [c for c in shipped() if c != "yolov5.yaml"]
REQUIRED = {f"yolov5-{k}.yaml" for k in ("c3tr local dilated global mixed window axial cluster sinkhorn linear reduce "
                                         "performer routing area").split()} | {"yolov8-local.yaml", "yolo11-local.yaml"}
FAMILY_TITLES = {"yolov5": "YOLOv5", "yolov8": "YOLOv8", "yolo11": "YOLO11"}


def _build(name: str, scale: str) -> DetectionModel:
    d = yaml.safe_load((CONFIGS / name).read_text())
    d["scale"] = scale
    return DetectionModel(d, verbose=False)


def _stacks(model):
    """Modules that run attention on a feature map and know their kind (transformer stacks, BoT bottlenecks)."""
    return [m for m in model.modules() if _ours(m) and hasattr(m, "kind")]


def _ours(m) -> bool:
    return type(m).__module__.startswith("yolo_attn.blocks")


def test_required_configs_exist_and_explain_themselves():
    assert REQUIRED <= set(ATTN_CONFIGS)
    for name in ATTN_CONFIGS:
        text = (CONFIGS / name).read_text()
        title = FAMILY_TITLES[family(name)]
        assert text.startswith(f"# {title} + "), f"{name} must start with a comment saying where attention sits"


@pytest.mark.parametrize("scale", "smlx")
@pytest.mark.parametrize("name", ATTN_CONFIGS)
def test_forward_at_every_scale(name, scale):
    """Scales s/m/l/x: build, then forward at 128x128 and 96x160 (scale n runs at 640 and 320x416, below)."""
    model = _build(name, scale).eval()
    assert any(_ours(m) for m in model.model)
    with torch.no_grad():
        for hw, feats in (((128, 128), [(16, 16), (8, 8), (4, 4)]), ((96, 160), [(12, 20), (6, 10), (3, 5)])):
            y, preds = model(torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(0)))
            assert [f.shape[-2:] for f in preds["feats"]] == feats
            assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", ATTN_CONFIGS)
def test_scale_n_forward_backward_fuse_info(name):
    model = _build(name, "n")
    seen = {}
    def record(m, i, o):
        seen[id(m)] = (m.kind, tuple(i[0].shape[-2:]))

    hooks = [s.register_forward_hook(record) for s in _stacks(model)]
    # backward at 320x416, batch 2: every parameter gets a gradient
    model.train()
    out = model(torch.randn(2, 3, 320, 416))
    (out["boxes"].square().mean() + out["scores"].square().mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert not missing, f"parameters without gradient: {missing}"
    for h in hooks:
        h.remove()
    # full attention only at P5 (stride 32): at 320x416 that is a 10x13 map
    assert seen, "no attention layer ran"
    for kind, hw in seen.values():
        if kind == "full":
            assert tuple(hw) == (10, 13), f"full attention on a {tuple(hw)} map (only P5 allowed)"
    # fuse() on an image, with BN statistics and heads that make the outputs depend on it; info. The fold is exact
    # algebra, so it is checked in float64 (at 160 px), where only rounding separates the two (float32 adds rounding
    # amplified by the model's conditioning: 2e-5 to 1.1e-3 of the output scale between configs and weight draws).
    randomize_detector(model)
    wrong = _misfolded(copy.deepcopy(model)).double()
    x = shapes_images(1, 640)
    with torch.no_grad():
        y0 = model(x)[0]
        assert (y0 - model(torch.zeros_like(x))[0]).abs().max() > 0.05 * y0.abs().max()  # depends on the image
        assert y0.shape == (1, 84, 8400)
        x = shapes_images(1, 160).double()  # float64 convolutions are slow on CPU: the exact check at 160 px
        model = model.double()
        y0 = model(x)[0]
        fused = model.fuse(verbose=False)
        y1 = fused(x)[0]
        y_wrong = wrong(x)[0]
    assert torch.isfinite(y1).all()
    assert not any(hasattr(m, "conv") and hasattr(m, "bn") for m in fused.modules())  # every Conv's BN was folded
    assert _fusion_error(y1, y0) < FUSE_TOL, _fusion_error(y1, y0)
    assert _fusion_error(y_wrong, y0) > 1e6 * FUSE_TOL  # negative control: a fold that forgets the mean is caught
    n_layers, n_params, _, gflops = fused.info(detailed=True, verbose=True)
    assert n_params > 0 and gflops > 0


#: Largest fused-vs-unfused difference in float64, relative to the output scale. Folding BN into the convolution is
#: exact algebra; float64 rounding (epsilon 2.2e-16) amplified through ~60 layers and the box decoding gives 6e-14 to
#: 6e-13 here (yolov8n-local, yolo11n-local, stock yolo11n). 1e-9 leaves a >1000x margin and lies ~1e8 below what a
#: fold that forgets the running mean changes (~0.5).
FUSE_TOL = 1e-9


def _fusion_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y - ref).abs().max() / ref.abs().max())


def _misfolded(model):
    """``model`` fused by a wrong fold: each Conv's BN folded as if its running mean were zero."""
    for m in model.modules():
        if hasattr(m, "conv") and isinstance(getattr(m, "bn", None), torch.nn.BatchNorm2d):
            m.bn.running_mean.zero_()
    return model.fuse(verbose=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", ATTN_CONFIGS)
def test_trains_one_epoch(name, shapes_data, tmp_path):
    model = yolo_attn.YOLO(scaled(name, "n"))
    model.train(data=str(shapes_data), epochs=1, imgsz=64, batch=8, workers=0, project=str(tmp_path), name="run",
                exist_ok=True, plots=False, val=False, device="cpu", verbose=False)
    assert (tmp_path / "run" / "weights" / "last.pt").exists()


@pytest.mark.slow
def test_gallery_script_writes_table_and_ratios(tmp_path):
    import runpy

    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- gallery:start -->\nold\n<!-- gallery:end -->\noutro\n")
    gallery = runpy.run_path(str(REPO / "scripts" / "gallery.py"), run_name="gallery")
    assert gallery["selected"]("") == shipped() + ["yolov8.yaml", "yolo11.yaml", "yolo12.yaml"]  # default: all
    with pytest.raises(SystemExit, match="yolov5-nope.yaml not shipped"):
        gallery["selected"]("yolov5-local.yaml,yolov5-nope.yaml")
    ours = ["yolov5.yaml", "yolov5-local.yaml", "yolov5-c3tr.yaml", "yolov8-local.yaml", "yolo11-local.yaml"]
    argv = ["--configs", ",".join(ours), "--scales", "n", "--imgsz", "128", "--repeats", "1", "--out", str(tmp_path),
            "--docs", str(doc)]  # every shipped config's transfer is tests/test_transfer.py's
    assert gallery["main"](argv) == 0
    table = (tmp_path / "gallery.md").read_text()
    lines = table.splitlines()
    assert "transfer from stock checkpoint" in next(line for line in lines if line.startswith("| config |"))
    rows = [line.split(" | ")[0][2:] for line in lines if line.startswith("| ") and not line.startswith("| config")]
    stock = ["yolov5n", "yolov8n", "yolo11n", "yolo12n"]
    peer = "peer: ultralytics C3TR in yolov5-c3tr (not shipped) (n)"
    assert set(rows) == {scaled(n, "n")[:-5] for n in ours} | set(stock) | {peer}, rows
    assert [r for r in rows if r in stock] == stock and rows.index("yolov8n") < rows.index("yolov8n-local")
    for name in ours[1:]:  # every stock tensor of the config's family transfers
        row = next(line for line in lines if line.startswith(f"| {scaled(name, 'n')[:-5]} |"))
        stock_tensors = row.split(" | ")[-1].split(",")[0].split("/")[1]
        assert row.endswith(f" | {stock_tensors}/{stock_tensors}, step-0 equal: yes |"), row
    assert next(line for line in lines if line.startswith("| peer: ultralytics C3TR")).endswith("step-0 equal: no |")
    assert next(line for line in lines if line.startswith("| yolo12n |")).endswith(" | - |")  # no family of ours
    for ratio in ("yolov5n-local / yolov5n = ", "ultralytics C3TR peer = ", "yolo11n-local / yolo11n = ",
                  "yolo11n-local / yolo12n = "):
        assert ratio in table
    text = doc.read_text()
    assert "old" not in text and "| yolov5n-local |" in text and text.startswith("intro") and text.endswith("outro\n")
    assert (tmp_path / "gallery.csv").exists()
