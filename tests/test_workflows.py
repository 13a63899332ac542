"""End-to-end on CPU through the `yolo-attn` command: train -> reload -> val -> predict -> export -> parity; resume.

One small training run (yolov5n-c3tr, 96 px, 32 images, 3 epochs) is shared by the tests of this module.
"""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON, subprocess_env
from yolo_attn import YOLO, checks, integration, workflows
from yolo_attn.data import shapes
from yolo_attn.cli import entrypoint

pytestmark = pytest.mark.slow

MODEL = "yolov5n-c3tr.yaml"
# nbs=batch: one optimizer step per batch (ultralytics otherwise accumulates to 64 images: no step in 3 epochs here)
FAST = ["imgsz=96", "batch=8", "nbs=8", "warmup_epochs=0", "workers=0", "plots=False", "seed=0", "exist_ok=True"]


def _epochs(run: Path) -> list[dict[str, float]]:
    with open(run / "results.csv") as f:
        return [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _loss(row: dict[str, float]) -> float:
    return row["train/box_loss"] + row["train/cls_loss"] + row["train/dfl_loss"]


@pytest.fixture(scope="module")
def trained(shapes_data, tmp_path_factory) -> Path:
    project = tmp_path_factory.mktemp("runs")
    argv = ["train", f"model={MODEL}", f"data={shapes_data}", "epochs=3", f"project={project}", "name=e2e", *FAST]
    assert entrypoint(argv) == 0
    best = project / "e2e" / "weights" / "best.pt"
    assert best.is_file()
    return best


def test_train_loss_falls_and_prints_best(trained, capsys):
    rows = _epochs(trained.parents[1])
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert _loss(rows[-1]) < _loss(rows[0]), [_loss(r) for r in rows]


def test_best_reloads_in_a_fresh_process(trained, tmp_path):
    code = (
        "import sys, torch, ultralytics\n"
        f"m = ultralytics.YOLO({str(trained)!r})\n"  # stock class: unpickling imports yolo_attn by itself
        "assert 'yolo_attn' in sys.modules\n"
        "y = m.model.eval()(torch.zeros(1, 3, 96, 96))[0]\n"
        "print('OK', tuple(y.shape))\n"
    )
    r = subprocess.run([PYTHON, "-c", code], env=subprocess_env(), cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "OK (1, 9, " in r.stdout  # 4 box + 5 shape classes


def test_val_reads_dataset_from_checkpoint(trained, tmp_path, capsys):
    assert entrypoint(["val", f"model={trained}", f"project={tmp_path}", "name=v", "plots=False"]) == 0
    assert "mAP50-95" in capsys.readouterr().out


def test_predict_writes_boxes(trained, shapes_data, tmp_path):
    image = next((shapes_data.parent / "images" / "val").glob("*.jpg"))
    argv = ["predict", f"model={trained}", f"source={image}", "conf=0.001", "save_txt", f"project={tmp_path}",
            "name=p", "imgsz=96"]
    assert entrypoint(argv) == 0
    out = tmp_path / "p"
    assert (out / image.name).is_file()  # annotated image
    lines = (out / "labels" / f"{image.stem}.txt").read_text().split("\n")
    assert [len(line.split()) for line in lines if line] and all(len(line.split()) == 5 for line in lines if line)


def test_export_onnx_parity_and_plain_ultralytics(trained, shapes_data, tmp_path, capsys):
    f, diff = workflows.export(trained, format="onnx")
    assert f.suffix == ".onnx" and f.is_file()
    assert diff is not None and diff < 1e-2, diff  # boxes are in pixels (up to ~96 here); measured ~1e-4
    assert "ONNX Runtime vs PyTorch" in capsys.readouterr().out
    image = next((shapes_data.parent / "images" / "val").glob("*.jpg"))
    code = (
        "import sys, ultralytics\n"
        f"r = ultralytics.YOLO({str(f)!r}, task='detect').predict({str(image)!r}, imgsz=96, conf=0.001, verbose=False)\n"
        "assert 'yolo_attn' not in sys.modules, 'the ONNX file should need no plugin'\n"
        "print('BOXES', len(r[0].boxes))\n"
    )
    r = subprocess.run([PYTHON, "-c", code], env=subprocess_env(), cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "BOXES " in r.stdout


def test_export_torchscript_parity_via_cli(trained, capsys):
    assert entrypoint(["export", f"model={trained}", "format=torchscript"]) == 0
    out = capsys.readouterr().out
    assert "TorchScript vs PyTorch" in out
    diff = float(out.split("max |diff| = ")[1].split()[0])
    assert diff < 1e-2, diff


def test_resume_continues_interrupted_run(shapes_data, tmp_path):
    """Interrupt after epoch 1 of 3 (an exception from a callback, as a crash would), then `train resume`."""

    class Interrupt(Exception):
        pass

    def stop_after_first_epoch(trainer):
        if trainer.epoch == 0:
            raise Interrupt

    model = YOLO(MODEL)
    model.add_callback("on_fit_epoch_end", stop_after_first_epoch)
    kw = {a.split("=")[0]: a.split("=")[1] for a in FAST}
    kw = {k: (int(v) if v.lstrip("-").isdigit() else v) for k, v in kw.items()}
    kw.update(plots=False, exist_ok=True)
    with pytest.raises(Interrupt):
        model.train(data=str(shapes_data), epochs=3, project=str(tmp_path), name="r", **kw)
    run = tmp_path / "r"
    assert [r["epoch"] for r in _epochs(run)] == [1]

    assert entrypoint(["train", "resume", f"model={run / 'weights' / 'last.pt'}"]) == 0
    assert [r["epoch"] for r in _epochs(run)] == [1, 2, 3]
    assert (run / "weights" / "best.pt").is_file()


def test_no_argument_train_uses_embedded_defaults(tmp_path, monkeypatch, capsys):
    """`yolo-attn train` alone: default attention config, shapes data generated into the user data dir, small defaults."""
    calls = []

    class FakeYOLO:
        def __init__(self, model):
            calls.append(("model", model))

        def train(self, **kw):
            calls.append(("train", kw))
            self.trainer = type("T", (), {"best": tmp_path / "best.pt", "last": tmp_path / "last.pt"})

    monkeypatch.setenv("YOLO_ATTN_DATA_DIR", str(tmp_path / "userdata"))
    monkeypatch.setitem(shapes.DEFAULT_SPEC, "n_train", 4)  # generation size only; the rest is the shipped default
    monkeypatch.setitem(shapes.DEFAULT_SPEC, "n_val", 2)
    monkeypatch.setattr(checks, "YOLO", FakeYOLO)  # where workflows load models
    assert entrypoint(["train"]) == 0
    (_, model), (_, kw) = calls
    assert model == workflows.default_model() and Path(integration.resolve_config(model)).parent == integration.CONFIG_DIR
    assert kw["data"] == str(tmp_path / "userdata" / "shapes" / "shapes.yaml")
    assert {k: kw[k] for k in workflows.SHAPES_TRAIN_DEFAULTS} == workflows.SHAPES_TRAIN_DEFAULTS
    out = capsys.readouterr().out
    assert f"best weights: {tmp_path / 'last.pt'}" in out  # no best.pt written by the fake: falls back to last.pt

    calls.clear()
    assert entrypoint(["train", "epochs=2", "imgsz=64"]) == 0  # explicit keys win over the defaults
    assert calls[1][1]["epochs"] == 2 and calls[1][1]["imgsz"] == 64 and calls[1][1]["batch"] == 16


def test_no_argument_train_really_trains_the_default_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("YOLO_ATTN_DATA_DIR", str(tmp_path / "userdata"))
    monkeypatch.setitem(shapes.DEFAULT_SPEC, "n_train", 8)
    monkeypatch.setitem(shapes.DEFAULT_SPEC, "n_val", 2)
    monkeypatch.setitem(shapes.DEFAULT_SPEC, "imgsz", 64)
    assert entrypoint(["train", "epochs=1", "imgsz=64", "batch=8", "workers=0", "plots=False",
                       f"project={tmp_path}"]) == 0
    best = tmp_path / "train" / "weights" / "best.pt"
    assert best.is_file()
    assert f"best weights: {best}" in capsys.readouterr().out
