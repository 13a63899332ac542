"""Bad inputs through every public entry point (YAML, Python API, CLI) get one clear error, and cost the user nothing.

Each case names the bad value and what is allowed. CLI cases run ``yolo_attn.cli.entrypoint`` in-process: exit
status 2, one ``yolo-attn: error: ...`` line on stderr, no traceback, and no file of the user's changed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import yaml

import yolo_attn
from yolo_attn import YamlConfigError, attend, pattern_mask, workflows
from yolo_attn.attention.modules import Attention
from yolo_attn.blocks import C3Attn
from yolo_attn.cli import entrypoint
from yolo_attn.data import make_shapes_dataset
from yolo_attn.integration import CONFIG_DIR

BASE = (CONFIG_DIR / "yolov5-c3tr.yaml").read_text()
P5 = "- [-1, 3, C3Attn, [1024]] # 8"
DETECT = "- [[17, 20, 23], 1, Detect, [nc]] # 24 Detect(P3, P4, P5)"


def _yaml(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new)


def _p5(args: str, number: int = 3, module: str = "C3Attn") -> str:
    return _yaml(P5, f"- [-1, {number}, {module}, {args}] # 8")


# ------------------------------------------------------------------------------------------------------ YAML cases
YAML_CASES = {
    "unknown-module": (_yaml(P5, "- [-1, 3, C3Atn, [1024]]"), ["'C3Atn'", "C3Attn", "yolo_attn provides"]),
    "unknown-kind": (_p5("[1024, locl]"), ["'locl'", "local", "window"]),
    "unknown-option": (_p5("[1024, local, {windw: 7}]"), ["'windw'", "allowed", "window"]),
    "heads-not-dividing": (_p5("[1024, full, {heads: 3}]"), ["heads=3", "does not divide", "divisor of 128"]),
    "window-zero": (_p5("[1024, local, {window: 0}]"), ["window=0", "int >= 1"]),
    "window-negative": (_p5("[1024, window, {window: -4}]"), ["window=-4", "int >= 1"]),
    "window-string": (_p5("[1024, local, {window: '7'}]"), ["window='7'", "int >= 1"]),
    "channels-not-int": (_p5("['256', local]"), ["args=['256', 'local']", "output channel count (int)"]),
    "options-not-mapping": (_p5("[1024, local, 7]"), ["got 7", "mapping"]),
    "too-many-args": (_p5("[1024, local, {window: 3}, 5]"), ["layer 8 (C3Attn)", "5", "positional"]),
    "pos-unknown": (_p5("[1024, local, {pos: rope}]"), ["pos='rope'", "cpe", "sincos"]),
    "pos-rel-unsupported": (_p5("[1024, linear, {pos: rel}]"), ["pos='rel'", "linear", "cpe"]),
    "mixed-without-heads": (_p5("[1024, mixed, {window: 3}]"), ["mixed needs heads", "None"]),
    "e-out-of-range": (_p5("[1024, local, {e: 0}]"), ["e=0", "(0, 4]"]),
    "mlp-ratio-negative": (_p5("[1024, local, {mlp_ratio: -1}]"), ["mlp_ratio=-1", "> 0"]),
    "global-with-extra-tokens": (_p5("[1024, global, {num_global_tokens: 2}]"), ["num_global_tokens=2", "global_idx", "tokens"]),
    "qkv-bias-not-bool": (_p5("[1024, local, {qkv_bias: 'no'}]"), ["qkv_bias='no'", "true or false"]),
    "patch-embed-repeated": (_p5("[64, 4]", number=2, module="PatchEmbed"), ["number=2", "does not repeat"]),
    "patch-zero": (_p5("[64, 0]", number=1, module="PatchEmbed"), ["patch=0", "int >= 1"]),
    "no-detect-layer": (_yaml(DETECT, "- [-1, 1, Conv, [64, 1, 1]]"), ["the last layer is 'Conv'", "Detect", "Segment"]),
    "layer-not-4-list": (_yaml(P5, "- [-1, 3, C3Attn]"), ["layer 8", "[from, number, module, args]"]),
}


@pytest.mark.parametrize("case", list(YAML_CASES))
def test_yaml_bad_input(case, tmp_path):
    text, needles = YAML_CASES[case]
    cfg = tmp_path / "yolov5n-bad.yaml"
    cfg.write_text(text)
    with pytest.raises(YamlConfigError) as e:
        yolo_attn.YOLO(str(cfg))
    for needle in needles:
        assert needle in str(e.value), (needle, str(e.value))


# ------------------------------------------------------------------------------------------------ Python API cases
_q = torch.randn(1, 2, 64, 8)
API_CASES: dict[str, tuple[Callable[[], Any], type[Exception], list[str]]] = {
    "attend-unknown-pattern": (lambda: attend(_q, _q, _q, "locl", hw=(8, 8)), ValueError, ["'locl'", "local"]),
    "attend-hw-mismatch": (lambda: attend(_q, _q, _q, "local", hw=(8, 7)), ValueError, ["hw=(8, 7)", "[B, heads, 56, d]"]),
    "attend-unknown-option": (lambda: attend(_q, _q, _q, "window", hw=(8, 8), windw=4), TypeError, ["'windw'", "'window'"]),
    "attend-window-zero": (lambda: attend(_q, _q, _q, "window", hw=(8, 8), window=0), ValueError, ["window=0", ">= 1"]),
    "mask-hw-string": (lambda: pattern_mask("local", "8x8"), ValueError, ["hw='8x8'", "pair of positive ints"]),
    "dilated-larger-than-map": (lambda: pattern_mask("dilated", (5, 4), window=3, dilation=5), ValueError,
                                ["dilation=5", "5x4 map", "dilation < 5"]),
    "dilated-attend-larger-than-map": (lambda: attend(_q, _q, _q, "stride", hw=(8, 8), dilation=8), ValueError,
                                       ["dilation=8", "8x8 map"]),
    "heads-not-dividing-dim": (lambda: Attention(64, 3), ValueError, ["num_heads=3", "dim=64"]),
    "block-heads-not-dividing": (lambda: C3Attn(64, 64, 1, "local", {"heads": 3}), ValueError, ["heads=3", "divisor of 32"]),
    "block-n-string": (lambda: C3Attn(64, 64, "2"), ValueError, ["n='2'", "int >= 1"]),
    "block-kind-int": (lambda: C3Attn(64, 64, 1, 7), ValueError, ["attention kind 7", "local"]),
    "dataset-n-train-zero": (lambda: make_shapes_dataset("unused", n_train=0), ValueError, ["n_train=0", "positive int"]),
    "model-missing-weights": (lambda: workflows.resolve_model("nothere.pt"), workflows.WorkflowError,
                              ["model=nothere.pt", "no such file"]),
    "model-missing-config": (lambda: yolo_attn.YOLO("yolov5n-nothere.yaml"), FileNotFoundError, ["yolov5-nothere.yaml"]),
    "export-not-a-checkpoint": (lambda: workflows.export(__file__, "onnx"), workflows.WorkflowError,
                                ["export needs a PyTorch checkpoint", "test_bad_inputs.py"]),
}


@pytest.mark.parametrize("case", list(API_CASES))
def test_python_api_bad_input(case):
    call, exc, needles = API_CASES[case]
    with pytest.raises(exc) as e:
        call()
    for needle in needles:
        assert needle in str(e.value), (needle, str(e.value))


def test_export_unknown_format_reaches_the_format_check(tmp_path):
    """A real checkpoint path, so the call gets past the checkpoint checks to the format check (and loads nothing)."""
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"")  # the format is checked before the checkpoint is read
    with pytest.raises(workflows.WorkflowError) as e:
        workflows.export(weights, "bogus")
    assert str(e.value).startswith("format=bogus is not an export format; allowed: ")
    assert all(name in str(e.value) for name in ("onnx", "torchscript", "openvino"))


# -------------------------------------------------------------------------------------------------------- CLI cases
@pytest.fixture(scope="module")
def user_files(tmp_path_factory, shapes_data) -> dict[str, Path]:
    """A user's folder: a checkpoint and its export, configs, datasets (good, bad labels, empty), broken .pt files."""
    root = tmp_path_factory.mktemp("user")
    best = root / "best.pt"
    yolo_attn.YOLO("yolov5n-c3tr.yaml").save(best)
    (root / "best.onnx").write_bytes(b"the user's previous export")
    yolo_attn.YOLO("yolov5n-local.yaml").save(root / "local.pt")
    (root / "truncated.pt").write_bytes(best.read_bytes()[:4096])
    (root / "empty.pt").write_bytes(b"")
    torch.save(yolo_attn.YOLO("yolov5n-c3tr.yaml").model.state_dict(), root / "state_dict.pt")
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()), root / "torchvision_like.pt")
    (root / "nodetect.yaml").write_text(_yaml(DETECT, "- [-1, 1, Conv, [64, 1, 1]]"))
    (root / "heads.yaml").write_text(_p5("[1024, full, {heads: 3}]"))
    (root / "unknown.yaml").write_text(_yaml(P5, "- [-1, 3, C3Atn, [1024]]"))
    files = {"best": best, "root": root, "data": Path(shapes_data)}
    for name, line in {"bad_class": "7 0.5 0.5 0.2 0.2", "bad_fields": "1 0.5 0.5 0.2",
                       "bad_coord": "1 0.5 1.5 0.2 0.2", "bad_number": "1 0.5 abc 0.2 0.2"}.items():
        ds = root / name
        meta = yaml.safe_load(make_shapes_dataset(ds, n_train=3, n_val=2, imgsz=64, seed=1).read_text())
        meta.pop("generator")  # a user's dataset now, not a recipe the generator may rewrite
        (ds / "data.yaml").write_text(yaml.safe_dump(meta))
        label = ds / "labels" / "train" / "000001.txt"
        label.write_text(label.read_text() + line + "\n")
        files[name] = ds / "data.yaml"
    empty = root / "empty_ds"
    for split in ("train", "val"):
        (empty / "images" / split).mkdir(parents=True)
    (empty / "data.yaml").write_text(yaml.safe_dump({"path": str(empty), "train": "images/train", "val": "images/val",
                                                     "names": {0: "a"}}))
    files["empty"] = empty / "data.yaml"
    return files


TRAIN = ["epochs=1", "imgsz=64", "batch=2", "workers=0", "plots=False"]
CLI_CASES = {
    "truncated-checkpoint": (["val", "model={root}/truncated.pt", "data={data}"],
                             ["truncated.pt is not a readable checkpoint", "4096 bytes", "best.pt"]),
    "empty-checkpoint": (["export", "model={root}/empty.pt"], ["empty.pt is not a readable checkpoint", "0 bytes"]),
    "state-dict-checkpoint": (["val", "model={root}/state_dict.pt", "data={data}"],
                              ["state_dict.pt is not an ultralytics/yolo_attn checkpoint", "best.pt"]),
    "foreign-model-checkpoint": (["export", "model={root}/torchvision_like.pt"],
                                 ["torchvision_like.pt is not an ultralytics/yolo_attn checkpoint", "Sequential"]),
    "predict-truncated": (["predict", "model={root}/truncated.pt", "source={root}/best.onnx"],
                          ["not a readable checkpoint"]),
    "export-format-unknown": (["export", "model={best}", "format=bogus"], ["format=bogus", "onnx", "torchscript"]),
    "export-a-config": (["export", "model={root}/heads.yaml"], ["export needs a PyTorch checkpoint", "heads.yaml"]),
    "export-dynamic-fixed-size-format": (["export", "model={root}/local.pt", "format=ncnn", "dynamic=True"],
                                         ["format=ncnn does not support dynamic=True", "dynamic=False", "onnx"]),
    "export-imgsz-not-stride": (["export", "model={best}", "imgsz=100"], ["imgsz=100", "stride 32", "imgsz=96 or imgsz=128"]),
    "train-imgsz-not-stride": (["train", "model=yolov5n-c3tr.yaml", "data={data}", *TRAIN, "imgsz=65"],
                               ["imgsz=65", "stride 32", "imgsz=64 or imgsz=96"]),
    "val-imgsz-too-small": (["val", "model={best}", "data={data}", "imgsz=16"], ["imgsz=16", "stride 32", "imgsz=32"]),
    "train-no-detect": (["train", "model={root}/nodetect.yaml", "data={data}", *TRAIN], ["'Conv'", "Detect"]),
    "train-heads": (["train", "model={root}/heads.yaml", "data={data}", *TRAIN], ["heads=3", "divisor of 128"]),
    "train-unknown-block": (["train", "model={root}/unknown.yaml", "data={data}", *TRAIN], ["'C3Atn'", "C3Attn"]),
    "train-missing-config": (["train", "model=yolov5n-nothere.yaml", "data={data}", *TRAIN], ["yolov5-nothere.yaml"]),
    "train-missing-data": (["train", "data={root}/nothere.yaml", *TRAIN], ["data={root}/nothere.yaml"]),
    "train-empty-data": (["train", "data={empty}", *TRAIN], ["no images in train=", "jpg"]),
    "label-class-out-of-range": (["train", "data={bad_class}", *TRAIN],
                                 ["000001.txt line", "class 7 is out of range", "0..4", "nc=5"]),
    "label-field-count": (["train", "data={bad_fields}", *TRAIN], ["000001.txt line", "4 fields", "allowed: 5"]),
    "label-coordinate-out-of-range": (["train", "data={bad_coord}", *TRAIN], ["coordinate 1.5", "[0, 1]"]),
    "label-not-a-number": (["train", "data={bad_number}", *TRAIN], ["'abc'", "not a number"]),
    "val-label-out-of-range": (["val", "model={best}", "data={bad_class}", "split=train"], ["class 7", "0..4"]),
    "device-cuda-missing": (["train", "data={data}", "device=99", *TRAIN], ["device=99", "device=cpu"]),  # any host
    "unknown-argument": (["train", "epoch=3"], ["'epoch'", "epochs"]),
}


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".cache" not in p.name}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_bad_input_one_line_no_traceback_no_overwrite(case, user_files, capsys, tmp_path, monkeypatch):
    argv, needles = CLI_CASES[case]
    fmt = {k: str(v) for k, v in user_files.items()}
    argv = [a.format(**fmt) for a in argv] + [f"project={tmp_path / 'runs'}"] * (argv[0] in ("train", "val", "predict"))
    monkeypatch.chdir(tmp_path)
    before = _snapshot(user_files["root"]), _snapshot(user_files["data"].parent)
    assert entrypoint(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("yolo-attn: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle.format(**fmt) in err, (needle, err)
    assert (_snapshot(user_files["root"]), _snapshot(user_files["data"].parent)) == before


def test_failed_export_keeps_the_previous_export(user_files, monkeypatch, capsys):
    """ultralytics truncates best.onnx before writing it; a failure midway must leave the user's old file intact."""
    from ultralytics.engine.exporter import Exporter

    best, old = user_files["best"], user_files["root"] / "best.onnx"
    before = _snapshot(user_files["root"])

    def fail_midway(self, *args, **kwargs):
        f = Path(self.file).with_suffix(".onnx")
        f.write_bytes(b"half-written")  # what a crash in the middle of torch.onnx.export leaves behind
        raise RuntimeError("simulated crash during ONNX export")

    monkeypatch.setattr(Exporter, "export_onnx", fail_midway)
    with pytest.raises(RuntimeError, match="simulated crash"):
        workflows.export(best, "onnx", imgsz=64)
    assert old.read_bytes() == b"the user's previous export"
    assert _snapshot(user_files["root"]) == before  # and no scratch folder left behind


def test_missing_cuda_index_on_a_cuda_host(shapes_data, monkeypatch, capsys):
    """The device-cuda-missing case on a host that has CUDA (simulated: 2 devices): still one line, exit 2."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert entrypoint(["train", f"data={shapes_data}", "device=0,99", *TRAIN]) == 2
    err = capsys.readouterr().err
    assert err == ("yolo-attn: error: device=(0, 99) asks for CUDA device 99, but this machine has 2 (indices 0..1); "
                   "use e.g. device=0 or device=cpu\n")
    assert workflows._check_device("cuda:1") is None and workflows._check_device(-1) is None
    with pytest.raises(workflows.WorkflowError, match=r"device=2 asks for CUDA device 2"):
        workflows._check_device(2)  # indices start at 0
