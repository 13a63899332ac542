"""`yolo-attn show` (mask pictures, attention overlay) and `yolo-attn info` (per-layer report) at tiny sizes."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from yolo_attn.attention import PATTERNS, pattern_mask
from yolo_attn.cli import entrypoint
from yolo_attn.inspect import format_info, keys_per_query, model_info
from yolo_attn.show import attention_row, show_pattern

PNG = b"\x89PNG\r\n\x1a\n"

# every pattern a YAML config can name, with options that make the picture non-trivial on a 6x7 map
PATTERN_ARGS = {
    "full": [],
    "local": ["window=3"],
    "dilated": ["window=3", "dilation=2"],
    "local1d": ["window=2"],
    "dilated1d": ["window=2", "dilation=3"],
    "window": ["window=4", "shift=True"],
    "axial": [],
    "global": ["window=3", "num_global_tokens=2", "global_idx=0,20"],
    "mixed": ["heads={local: 2, dilated: 1, axial: 1}", "window=3", "dilation=2"],
    "area": ["area=3"],
}


def test_every_yaml_pattern_is_covered():
    assert set(PATTERNS) - {"custom"} == set(PATTERN_ARGS)


@pytest.mark.parametrize("name", list(PATTERN_ARGS))
def test_show_pattern_cli(name, tmp_path, capsys):
    out = tmp_path / f"{name}.png"
    argv = ["show", f"pattern={name}", "size=6x7", "point=2,3", *PATTERN_ARGS[name], f"out={out}"]
    assert entrypoint(argv) == 0, capsys.readouterr().err
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 5000


def test_show_custom_mask_python(tmp_path):
    mask = torch.eye(12, dtype=torch.bool) | torch.eye(12, dtype=torch.bool).roll(1, 1)
    f = show_pattern("custom", (3, 4), path=tmp_path / "custom.png", mask=mask)
    assert f.read_bytes()[:8] == PNG


def test_show_pattern_point_outside(tmp_path):
    with pytest.raises(ValueError, match="outside the 4x4 map"):
        show_pattern("local", (4, 4), point=(4, 0), path=tmp_path / "x.png", window=3)


def _image(path):
    img = np.full((96, 128, 3), 180, np.uint8)
    cv2.circle(img, (40, 50), 20, (0, 0, 255), -1)
    cv2.imwrite(str(path), img)
    return path


def test_show_attention_config_and_checkpoint(tmp_path):
    from yolo_attn import YOLO

    img = _image(tmp_path / "img.jpg")
    out = tmp_path / "att.png"
    assert entrypoint(["show", "attention", "model=yolov5n-mixed.yaml", f"source={img}", "point=40,50",
                       "imgsz=64", f"out={out}"]) == 0
    assert out.read_bytes()[:8] == PNG
    ckpt = tmp_path / "local.pt"
    YOLO("yolov5n-local.yaml").save(ckpt)
    out2 = tmp_path / "att2.png"
    assert entrypoint(["show", "attention", f"model={ckpt}", f"source={img}", "point=100,10", "imgsz=64",
                       f"out={out2}"]) == 0
    assert out2.read_bytes()[:8] == PNG


@pytest.mark.parametrize("pattern, options", [
    ("local", {"window": 3}), ("dilated", {"window": 3, "dilation": 2}), ("axial", {}), ("full", {}),
    ("mixed", {"heads": {"local": 1, "axial": 1}, "window": 3}), ("global", {"window": 3, "num_global_tokens": 1}),
])
def test_attention_row_matches_dense_attention(pattern, options):
    """The recomputed 1 x N row equals the row of the module's dense masked softmax."""
    from yolo_attn.attention import Attention

    heads = 2
    attn = Attention(16, heads, pattern, **options) if pattern != "global" else None
    if attn is None:
        from yolo_attn.attention.tokens import GlobalTokenAttention

        attn = GlobalTokenAttention(16, heads, **options)
    g = options.get("num_global_tokens", 0)
    hw, qi = (5, 6), 13
    x = torch.randn(1, 30, 16)
    row = attention_row(attn, x, hw, qi)
    assert row.shape == (heads, g + 30)
    xs = torch.cat([attn.global_tokens[None], x], 1) if g else x
    q, k, _ = attn.qkv(xs).reshape(1, g + 30, 3, heads, 8).permute(2, 0, 3, 1, 4).unbind(0)
    logits = (q @ k.transpose(-2, -1))[0] * 8 ** -0.5
    mask = pattern_mask(pattern, hw, **options)
    dense = logits.masked_fill(~mask.expand_as(logits), float("-inf")).softmax(-1)
    torch.testing.assert_close(row, dense[:, g + qi])
    assert torch.allclose(row.sum(-1), torch.ones(heads))


@pytest.mark.parametrize("pattern, options, hw", [
    ("full", {}, (5, 6)), ("local", {"window": 3}, (5, 6)), ("local", {"window": 9}, (5, 6)),
    ("dilated", {"window": 3, "dilation": 2}, (6, 8)), ("axial", {}, (5, 6)), ("window", {"window": 3}, (6, 9)),
])
def test_keys_per_query_matches_mask(pattern, options, hw):
    mask = pattern_mask(pattern, hw, **options)
    assert keys_per_query(pattern, options, hw) == pytest.approx(mask.sum(1).float().mean().item())


def test_info_p3_tokens_and_costs(capsys):
    assert entrypoint(["info", "model=configs/yolov5n-local.yaml", "imgsz=640"]) == 0
    text = capsys.readouterr().out
    assert "| 17 | C3Attn | 64x80x80 | 6400 | local (window=7)" in text
    assert "2 * N_q * K * d * heads * 2" in text  # the formulas head the report
    info = model_info("yolov5n-local.yaml", imgsz=64, batch=4)
    attn = [r for r in info["rows"] if "pattern" in r]
    assert [r["layer"] for r in attn] == [8, 13, 17]
    assert all(math.isfinite(r["attn_gflops"]) and r["attn_gflops"] > 0 and r["score_mb"] > 0 for r in attn)
    p3 = next(r for r in attn if r["layer"] == 17)
    assert p3["tokens"] == 64 and p3["keys"] == 49
    # FLOPs = 2 N K d heads 2 per call, times the batch
    assert p3["attn_gflops"] * 1e9 == 4 * 2 * 64 * 49 * p3["head_dim"] * p3["heads"] * 2
    assert not info["warnings"]


def test_info_gain_column_says_how_far_each_layers_attention_is_switched_on():
    """The gain column is each layer's mean |LayerScale gain|: 1 from scratch, what the weights hold otherwise (a
    fine-tuned checkpoint's is small), empty for layers without attention."""
    from yolo_attn import YOLO

    model = YOLO("yolov5n-local.yaml").model
    rows = {r["layer"]: r for r in model_info(model, imgsz=64)["rows"]}
    assert {i: r["gain"] for i, r in rows.items() if r["gain"] is not None} == {8: 1.0, 13: 1.0, 17: 1.0}
    with torch.no_grad():
        model.model[13].attn.layers[0].ls1.gamma[:] = -0.25  # |gain|: the sign of a gain does not switch it off
        for g in (model.model[13].attn.layers[0].ls2.gamma, model.model[13].attn.ls_pos.gamma):
            g.zero_()
    rows = {r["layer"]: r for r in model_info(model, imgsz=64)["rows"]}
    dims = [p.numel() for p in (model.model[13].attn.layers[0].ls1.gamma, model.model[13].attn.layers[0].ls2.gamma,
                                model.model[13].attn.ls_pos.gamma)]
    assert rows[13]["gain"] == pytest.approx(0.25 * dims[0] / sum(dims))
    assert rows[8]["gain"] == 1.0 and rows[9]["gain"] is None
    text = format_info(model_info(model, imgsz=64))
    assert text.splitlines()[3].endswith("| score_mb | gain |") and "| 1 |" in text


def test_info_warns_full_attention_on_large_map():
    info = model_info("yolov5n-c3tr.yaml", imgsz=1280)  # P5 is 40 x 40 = 1600 tokens of full attention
    assert any("layer 8: full attention on a 40x40 map" in w for w in info["warnings"])
