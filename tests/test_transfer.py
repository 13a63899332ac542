"""Fine-tuning from a stock checkpoint (issue #12; YOLOv8 / YOLO11: issue #14): every shipped config takes every
tensor of its family's stock checkpoint, predicts exactly what the stock model predicts at step 0, and its zero-gain
attention branches learn (they are not dead); bad checkpoints and checkpoints of another family give one-line errors;
the transfer report is printed by layer.

The stock checkpoints are made here: ultralytics' own plain YOLOv5n / YOLOv8n / YOLO11n (its yolov5n.yaml, the YOLOv5u
layout of yolov5nu.pt; yolov8n.yaml; yolo11n.yaml) trained 1 epoch on generated data with 80 class names, as the
published checkpoints have. A 1-epoch model's outputs hardly depend on its input (seen: 1.5e-5 px), so before use its
BatchNorms get random affines and calibrated statistics (:func:`yolo_attn.bench.models.make_sensitive`); the file
stays ultralytics' checkpoint format.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import yolo_attn
from conftest import CONFIGS
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import DetectionModel, load_checkpoint
from yolo_attn.bench.finetune import pack_runs
from yolo_attn.bench.models import make_sensitive
from yolo_attn.bench.state import read_parts
from yolo_attn.blocks import AttnC2f, AttnC3k2, BoTBlock, C3Attn, MHSABranch, TransformerStack, gains
from yolo_attn.cli import entrypoint
from yolo_attn.configs import family, scaled, shipped, stock_config
from yolo_attn.data import render_image
from yolo_attn.integration import load_pretrained
from yolo_attn.transfer import TransferError, stock_type

SHIPPED = [c for c in shipped() if c != "yolov5.yaml"]
BLOCKS = (C3Attn, BoTBlock, AttnC2f, AttnC3k2)
ATOL = 1e-4  # decoded boxes (pixels) and scores


def _image(seed: int, size: int = 128) -> torch.Tensor:
    img = render_image(size, seed=seed)[..., ::-1]  # BGR -> RGB, as ultralytics' preprocessing
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].float() / 255


@pytest.fixture(scope="session")
def stock_of(tmp_path_factory, shapes_data):
    """``stock_of(family) -> (checkpoint path, its model)``: a stock-layout checkpoint written by ultralytics (1 epoch
    of its plain ``<family>n.yaml``, 80 class names), input-sensitive; made once per family, on first use."""
    from ultralytics import YOLO as UltralyticsYOLO

    root = tmp_path_factory.mktemp("stock")
    d = yaml.safe_load(Path(shapes_data).read_text())
    d.pop("generator", None)
    d["path"] = str(Path(shapes_data).parent)
    d["names"] = {i: f"class{i}" for i in range(80)}
    data = root / "data80.yaml"
    data.write_text(yaml.safe_dump(d))
    made = {}

    def make(fam: str) -> tuple[Path, torch.nn.Module]:
        if fam not in made:
            UltralyticsYOLO(stock_config(f"{fam}.yaml", "n")).train(
                data=str(data), epochs=1, imgsz=64, batch=8, workers=0, val=False, plots=False, device="cpu",
                project=str(root), name=fam, verbose=False)
            ckpt = torch.load(root / fam / "weights" / "last.pt", weights_only=False)
            ckpt["model"] = make_sensitive(ckpt["model"].float(), imgsz=64).half()
            path = root / f"stock-{fam[4:]}n.pt"  # stock-v5n.pt: "...yolov5n.pt" would make ultralytics load yolov5nu.pt
            torch.save(ckpt, path)
            made[fam] = path, load_checkpoint(str(path))[0].eval()
        return made[fam]

    return make


@pytest.fixture(scope="session")
def stock_ckpt(stock_of) -> Path:
    """The stock YOLOv5n checkpoint (see :func:`stock_of`)."""
    return stock_of("yolov5")[0]


@pytest.fixture(scope="session")
def stock_model(stock_of) -> torch.nn.Module:
    return stock_of("yolov5")[1]


@pytest.fixture
def ultralytics_log():
    """Records of ultralytics' logger at INFO (tests run with YOLO_VERBOSE=False); restored afterwards."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger, handler = logging.getLogger("ultralytics"), Keep()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def _stock_count(sd: dict, i: int) -> int:
    return sum(k.startswith(f"model.{i}.") for k in sd)


def _branches(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, (TransformerStack, MHSABranch))]


def _branch_changes(model: torch.nn.Module, x: torch.Tensor) -> list[float]:
    """Per attention branch: largest change it makes (stack: output - input; BoT branch: its output)."""
    seen = []

    def hook(m, args, out):
        seen.append(float((out - args[0]).abs().max() if isinstance(m, TransformerStack) else out.abs().max()))

    handles = [b.register_forward_hook(hook) for b in _branches(model)]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return seen


def _detection_batch(gen: torch.Generator) -> dict:
    """Two 256x256 images with two boxes each, in ultralytics' training-batch layout (at 256 px every attention
    has several blocks / windows / clusters to choose from: sinkhorn's sorting net gets no gradient from one block)."""
    return {"img": torch.rand(2, 3, 256, 256, generator=gen), "batch_idx": torch.tensor([0.0, 0.0, 1.0, 1.0]),
            "cls": torch.tensor([[1.0], [3.0], [0.0], [7.0]]),
            "bboxes": torch.tensor([[0.3, 0.3, 0.2, 0.3], [0.7, 0.6, 0.3, 0.2], [0.5, 0.5, 0.4, 0.4],
                                    [0.2, 0.8, 0.1, 0.2]])}


@pytest.mark.parametrize("name", SHIPPED)
def test_stock_checkpoint_transfers_fully_starts_as_stock_and_learns(name, stock_of):
    stock_ckpt, stock_model = stock_of(family(name))
    yolo = yolo_attn.YOLO(scaled(name, "n")).load(str(stock_ckpt))
    model, report, stock_sd = yolo.model, yolo.transfer_report, stock_model.state_dict()
    # the report, by layer: every stock tensor lands in its layer; our blocks add their attention as new tensors
    assert report.n_source == report.transferred == len(stock_sd) and report.dropped == 0
    assert f"{len(stock_sd)}/{len(stock_sd)} checkpoint tensors (100.0%) transferred" in report.format()
    blocks = []
    for row in report.layers:
        layer = model.model[row.index]
        assert row.transferred == _stock_count(stock_sd, row.index) and row.dropped == 0, row
        if isinstance(layer, BLOCKS):
            blocks.append(row.index)
            assert row.source == stock_type(layer) == type(stock_model.model[row.index]).__name__
            assert row.identity is True
            assert row.new == len(layer.state_dict()) - len(layer.stock_keys()) > 0
            assert f"{row.index:>5}  {row.module:<10} {row.source}" in report.format()
        else:
            assert row.new == 0 and row.module == row.source and row.identity is None
    assert blocks and report.identity
    # step 0: exactly the stock model's decoded boxes and scores, on inputs the output depends on
    x1, x2 = _image(1), _image(2)
    with torch.no_grad():
        want = [stock_model(x)[0] for x in (x1, x2)]
        got = [model.eval()(x)[0] for x in (x1, x2)]
    assert (want[0] - want[1])[:, :4].abs().max() > 1 and (want[0] - want[1])[:, 4:].abs().max() > 1e-2
    for g, w in zip(got, want):
        assert g.shape == w.shape and (g - w).abs().max() <= ATOL
    assert max(_branch_changes(model, x1)) == 0.0
    # not dead: three optimiser steps on the detection loss move every gain and every attention weight
    params = {n: p for n, p in model.named_parameters() if any(n.startswith(f"model.{i}.") for i in blocks)}
    stock_keys = {f"model.{i}.{k}" for i in blocks for k in model.model[i].stock_keys()}
    branch = {n: p.detach().clone() for n, p in params.items() if n not in stock_keys}
    model.args = get_cfg()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)  # no decay: only gradients move weights
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(3):
        loss, _ = model.loss(_detection_batch(gen))
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
    still = [n for n, p in params.items() if n in branch and torch.equal(p.detach(), branch[n])]
    assert not still, f"attention weights that did not move: {still[:5]}"
    assert all(g.detach().abs().min() > 0 for g in gains(model))
    assert min(_branch_changes(model, x1)) > 0


@pytest.mark.parametrize("cfg", ["yolov5m-bot.yaml", "yolo11m-local.yaml"])
def test_scale_m_transfers_fully_and_starts_as_stock(cfg):
    """Scale m: two bottlenecks per 3-repeat C3, each with its attention branch in BoTBlock; C3k2 with C3k inner
    blocks (ultralytics' c3k at m/l/x) in AttnC3k2 (the README gallery checks every config at every scale the same
    way: scripts/gallery.py)."""
    from yolo_attn.bench.models import build_model, stock_transfer

    model = build_model(cfg)
    assert cfg != "yolo11m-local.yaml" or type(model.model[13].m[0]).__name__ == "C3k"
    r = stock_transfer(model, "m", imgsz=64)
    assert r["fraction"] == 1.0 and r["transferred"] == r["stock_tensors"] and r["step0_equal"], r


def test_cli_finetune_epoch_reports_reinitialises_only_the_head_and_moves_gains(
        stock_ckpt, stock_model, shapes_data, tmp_path, ultralytics_log):
    """`yolo-attn train pretrained=...` on data with 5 classes (the checkpoint has 80): only the class outputs are
    new; one epoch moves the attention gains off 0 and the branches change the features."""
    argv = ["train", "model=yolov5n-local.yaml", f"pretrained={stock_ckpt}", f"data={shapes_data}", "epochs=1",
            "imgsz=64", "batch=8", "workers=0", "warmup_epochs=0", "device=cpu", f"project={tmp_path}", "name=ft",
            "exist_ok=True", "plots=False", "val=False"]
    assert entrypoint(argv) == 0
    sd = stock_model.state_dict()
    head = len(stock_model.model) - 1
    cls_out = sum(k.startswith(f"model.{head}.cv3.") and k.split(".")[4] == "2" for k in sd)  # last conv per level
    n = len(sd)
    summary = f"Transfer from stock-v5n.pt into yolov5n-local.yaml: {n - cls_out}/{n} checkpoint tensors"
    assert any(summary in r for r in ultralytics_log), ultralytics_log[-20:]
    rows = [r for r in ultralytics_log if r.startswith(f"{head:>5}  Detect")]
    assert rows and f"{_stock_count(sd, head) - cls_out:>11} {cls_out:>5} {cls_out:>7}" in rows[0]
    assert "re-initialised" in rows[0]
    tuned = load_checkpoint(str(tmp_path / "ft" / "weights" / "last.pt"))[0].float()
    assert all(g.detach().abs().min() > 0 for g in gains(tuned))
    assert min(_branch_changes(tuned, _image(1, 64))) > 0


def test_own_checkpoint_keeps_its_attention(tmp_path):
    mine = yolo_attn.YOLO("yolov5n-mixed.yaml")
    assert all(torch.equal(g, torch.ones_like(g)) for g in gains(mine.model))  # from scratch: gain 1
    with torch.no_grad():
        for g in gains(mine.model):
            g.fill_(0.5)
    mine.save(tmp_path / "mine.pt")
    again = yolo_attn.YOLO("yolov5n-mixed.yaml").load(str(tmp_path / "mine.pt"))
    assert again.transfer_report.new == 0 and again.transfer_report.fraction == 1.0
    assert not again.transfer_report.identity
    assert all(torch.equal(g, torch.full_like(g, 0.5)) for g in gains(again.model))


def test_layer_scale_option(stock_model):
    """layer_scale: a number is the initial gain and loading keeps it; auto is zeroed by a stock load."""
    d = yaml.safe_load((CONFIGS / "yolov5-local.yaml").read_text())
    d["scale"] = "n"
    d["head"][3][3][2]["layer_scale"] = 1  # layer 13
    d["head"][7][3][2]["layer_scale"] = 0  # layer 17
    model = DetectionModel(d, verbose=False)
    assert all(torch.equal(g, torch.zeros_like(g)) for g in gains(model.model[17]))  # from scratch, as given
    report = load_pretrained(model, stock_model, "weights=stock", verbose=False)
    assert all(torch.equal(g, torch.ones_like(g)) for g in gains(model.model[13]))
    assert all(not g.any() for g in gains(model.model[8]))  # auto
    rows = {r.index: r for r in report.layers}
    assert rows[13].identity is False and "gains kept" in rows[13].note() and rows[8].identity and rows[17].identity
    assert not report.identity and report.fraction == 1.0


# ------------------------------------------------------------------------------------------------ bad checkpoints
@pytest.fixture(scope="session")
def bad_checkpoints(tmp_path_factory) -> dict[str, Path]:
    from ultralytics import YOLO as UltralyticsYOLO

    root = tmp_path_factory.mktemp("bad")
    out = {"yolo11": root / "yolo11n-ckpt.pt", "yolov8": root / "yolov8n-ckpt.pt", "scale-s": root / "stock-s.pt",
           "state-dict": root / "weights.pt", "text": root / "notes.pt", "empty": root / "empty.pt",
           "missing": root / "missing.pt"}
    UltralyticsYOLO("yolo11n.yaml").save(out["yolo11"])
    UltralyticsYOLO("yolov8n.yaml").save(out["yolov8"])
    UltralyticsYOLO("yolov5s.yaml").save(out["scale-s"])
    torch.save(DetectionModel("yolov5n.yaml", verbose=False).state_dict(), out["state-dict"])
    out["text"].write_text("not a checkpoint\n")
    out["empty"].write_bytes(b"")
    return out


BAD = {
    "yolo11": ["yolo11n.yaml", "does not fit yolov5n-local.yaml", "C3k2", "yolov5nu.pt"],
    "scale-s": ["yolov5s.yaml", "does not fit", "scale s vs n", "yolov5nu.pt"],
    "state-dict": ["weights.pt is not an ultralytics/yolo_attn checkpoint", "yolov5nu.pt"],
    "text": ["notes.pt is not a readable checkpoint", "17 bytes", "best.pt"],
    "empty": ["empty.pt is not a readable checkpoint", "0 bytes"],
    "missing": ["missing.pt: no such file", "never downloads"],
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_checkpoint_is_a_one_line_error_and_changes_nothing(case, bad_checkpoints):
    yolo = yolo_attn.YOLO("yolov5n-local.yaml")
    before = {k: v.clone() for k, v in yolo.model.state_dict().items()}
    with pytest.raises(TransferError) as err:
        yolo.load(str(bad_checkpoints[case]))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("weights=")
    for s in BAD[case]:
        assert s in msg, f"{s!r} not in {msg}"
    after = yolo.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


#: (config, checkpoint) of another family -> what the one-line error names: both models, the layer types of the
#: checkpoint that the config lacks, and the checkpoint that fits the config (its family's, at its scale).
FAMILY_MISFITS = {
    ("yolo11n-local.yaml", "yolov8"): ["yolov8n.yaml", "does not fit yolo11n-local.yaml", "C2f", "yolo11n.pt"],
    ("yolov8n-local.yaml", "yolo11"): ["yolo11n.yaml", "does not fit yolov8n-local.yaml", "C2PSA", "yolov8n.pt"],
    ("yolo11s-local.yaml", "scale-s"): ["yolov5s.yaml", "does not fit yolo11s-local.yaml", "C3", "yolo11s.pt"],
}


@pytest.mark.parametrize("cfg, case", sorted(FAMILY_MISFITS))
def test_checkpoint_of_another_family_is_refused_in_one_line(cfg, case, bad_checkpoints):
    yolo = yolo_attn.YOLO(cfg)
    with pytest.raises(TransferError) as err:
        yolo.load(str(bad_checkpoints[case]))
    msg = str(err.value)
    assert "\n" not in msg and "another model family" in msg
    for s in FAMILY_MISFITS[(cfg, case)]:
        assert s in msg, f"{s!r} not in {msg}"


@pytest.mark.parametrize("case", ["yolo11", "missing", "text"])
def test_bad_pretrained_through_train_and_cli(case, bad_checkpoints, shapes_data, tmp_path, capsys):
    """`YOLO(cfg).train(pretrained=...)` and `yolo-attn train pretrained=...` refuse before any training."""
    with pytest.raises(TransferError, match=f"pretrained={bad_checkpoints[case]}"):
        yolo_attn.YOLO("yolov5n-local.yaml").train(data=str(shapes_data), pretrained=str(bad_checkpoints[case]),
                                                    epochs=1, imgsz=64, project=str(tmp_path), name="py")
    rc = entrypoint(["train", "model=yolov5n-local.yaml", f"pretrained={bad_checkpoints[case]}",
                     f"data={shapes_data}", "epochs=1", "imgsz=64", f"project={tmp_path}", "name=cli"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("yolo-attn: error: pretrained=")
    assert BAD[case][-1] in err
    assert not (tmp_path / "py").exists() and not (tmp_path / "cli").exists()


def test_legacy_yolov5_file_name_is_refused_not_downloaded(stock_ckpt, tmp_path, monkeypatch):
    """ultralytics swaps `yolov5n.pt` for `yolov5nu.pt` and downloads it; we refuse with the reason instead."""
    monkeypatch.chdir(tmp_path)
    os.link(stock_ckpt, tmp_path / "yolov5n.pt")
    with pytest.raises(TransferError, match="original YOLOv5 repo's weights.*yolov5nu.pt"):
        yolo_attn.YOLO("yolov5n-local.yaml").load("yolov5n.pt")


# ------------------------------------------------------------------------------------------------ bench finetune
def test_bench_finetune_tiny_resumable(shapes_data, tmp_path, capsys):
    out, elsewhere, parts = tmp_path / "bench", tmp_path / "machine-a", tmp_path / "parts"
    argv = ["bench", "finetune", f"data={shapes_data}", "configs=yolov5n.yaml,yolov5n-window.yaml", "seeds=0,1",
            "pretrain_epochs=2", "epochs=1", "imgsz=32", "batch=8", "workers=0", f"out={out}"]
    # a first launch on another machine, whose budget (0.5 min minus the 30 s kept for report and pack) is spent
    # by the first pretraining epoch: it stops between epochs, writes no report and packs its state (the unfinished
    # checkpoint, 24 MiB with AdamW's state, fits the default pack_mb=20 once that state travels in bfloat16)
    assert entrypoint([*argv[:-1], f"out={elsewhere}", "time_budget=0.5", f"pack={parts}"]) == 0
    said = capsys.readouterr().out
    assert "stopped within time_budget=0.5 min" in said and "0 of 4 fine-tunes finished" in said
    pre_a = (elsewhere / "finetune_runs" / "pretrain-yolov5n" / "results.csv").read_text().splitlines()
    assert len(pre_a) == 2 and not (elsewhere / "finetune.csv").exists()
    packed = {rel: content for rel, content in read_parts(parts, "finetune.tar")}
    last = ("finetune_runs", "pretrain-yolov5n", "weights", "last.pt")
    sent = torch.load(io.BytesIO(packed[last]), map_location="cpu", weights_only=False)
    kept = torch.load(elsewhere.joinpath(*last), map_location="cpu", weights_only=False)
    for i, state in kept["optimizer"]["state"].items():  # AdamW's moments travel in bfloat16, the rest as it was
        for k, v in state.items():
            got = sent["optimizer"]["state"][i][k]
            assert got.dtype == (v.dtype if k == "step" else torch.bfloat16)
            torch.testing.assert_close(got.float(), v, rtol=2**-8, atol=1e-30)  # atol: fp32 subnormals
    assert sent["epoch"] == kept["epoch"] == 0 and sent["ema"].state_dict().keys() == kept["ema"].state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(sent["ema"].state_dict().values(), kept["ema"].state_dict().values()))
    pack_runs(elsewhere, tmp_path / "small", pack_mb=1)  # the unfinished checkpoint does not fit: named, left out
    assert "pretrain-yolov5n/weights/last.pt left out" in capsys.readouterr().out
    assert not [rel for rel, _ in read_parts(tmp_path / "small", "finetune.tar") if rel[-1].endswith(".pt")]
    # here: restore, resume the pretraining at epoch 2 (its first epoch is not trained again), fine-tune everything
    assert entrypoint([*argv, f"restore={parts}"]) == 0
    pre = (out / "finetune_runs" / "pretrain-yolov5n" / "results.csv").read_text().splitlines()
    assert pre[:2] == pre_a and [r.split(",")[0] for r in pre[1:]] == ["1", "2"]
    for suffix in (".csv", ".md", ".png"):
        assert (out / f"finetune{suffix}").stat().st_size > 100
    text = (out / "finetune.md").read_text()
    assert "Command: `yolo-attn bench finetune" in text and "torch" in text and str(tmp_path) not in text
    rows = (out / "finetune.csv").read_text().splitlines()
    assert rows[0].startswith("config,seed,map50_95_step0,map50_95,delta,attn_gain,transferred,stock_tensors")
    assert len(rows) == 5
    values = [r.split(",") for r in rows[1:]]
    assert [(v[0], v[1]) for v in values] == [("yolov5n", "0"), ("yolov5n-window", "0"), ("yolov5n", "1"),
                                              ("yolov5n-window", "1")]
    assert all(math.isfinite(float(x)) for v in values for x in v[2:5]) and len({v[2] for v in values}) == 1
    assert all(v[6] == v[7] for v in values)  # every stock tensor transferred
    # the attention started as a no-op (gain 0) and the fine-tune switched it on a little; plain has no gain
    assert [v[5] for v in values if v[0] == "yolov5n"] == ["", ""]
    assert all(0 < float(v[5]) < 0.5 for v in values if v[0] == "yolov5n-window")
    # the summary: two runs per config, the mean of the CSV's values, a verdict against plain paired by seed
    summary = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| yolov5n")][:2]
    assert [c.strip() for c in summary[0][:2]] == ["yolov5n", "2"] and summary[0][-1].strip() == "reference"
    window = [float(v[3]) for v in values if v[0] == "yolov5n-window"]
    assert float(summary[1][3]) == pytest.approx(sum(window) / 2, abs=1e-4)
    assert summary[1][-1].strip() in {"met", "within noise", "missed"} and "Goal, part 2" in text
    assert all(json.loads(f.read_text())["wall_s"] > 0 for f in (out / "finetune_runs").glob("*-seed*/result.json"))
    weights = sorted((out / "finetune_runs").glob("*/weights/last.pt"))
    assert len(weights) == 5  # pretrain + 2 configs x 2 seeds
    stamps = [w.stat().st_mtime_ns for w in weights]
    assert entrypoint(argv) == 0  # finished runs are skipped
    assert [w.stat().st_mtime_ns for w in weights] == stamps
    assert (out / "finetune.csv").read_text().splitlines() == rows
    assert entrypoint([*argv[:4], "seeds=1,1"]) == 2  # repeated seeds: one-line refusal
    (out / "finetune.csv").unlink()
    assert entrypoint([*argv[:4], "seeds=0,1,7", "part=report", f"out={out}"]) == 0  # seed 7 never ran: left out
    assert (out / "finetune.csv").read_text().splitlines() == rows
    assert [w.stat().st_mtime_ns for w in weights] == stamps  # nothing trained
    assert entrypoint([*argv[:4], "part=report", f"out={tmp_path / 'empty'}"]) == 2  # nothing finished: one line
    assert entrypoint([*argv[:4], "part=val"]) == 2
    assert entrypoint([*argv, "time_budget=0"]) == 2 and "time_budget=0 must be a number > 0" in capsys.readouterr().err
    # no plain model first and no pretrained=: refused in one line, before anything is trained
    assert entrypoint([*argv[:3], "configs=yolov5n-window.yaml", f"out={tmp_path / 'nope'}"]) == 2
    assert not (tmp_path / "nope").exists()


def test_finetune_starts_no_run_that_would_pass_the_deadline():
    from yolo_attn.bench.finetune import _check_run_fits, _OutOfTime

    finished = [{"wall_s": 40.0}, {"wall_s": 100.0}, {}]  # the slowest uninterrupted run counts; resumed ones have none
    with pytest.raises(_OutOfTime, match="next fine-tune \\(~100 s"):
        _check_run_fits(finished, time.time() + 90)
    _check_run_fits(finished, time.time() + 300)
    _check_run_fits(finished, None)
    _check_run_fits([{}], time.time())  # nothing measured yet: the run is started (its epochs still stop in time)


def test_finetune_summary_pairs_runs_by_seed():
    """The verdict compares each seed with plain's run of the same seed (same batches, same start): a config that is
    0.5 points below plain on every seed is ``missed`` although the seed-to-seed spread (2 points) is larger; one that
    is above on some seeds and below on others is ``within noise``; seeds plain has not finished are left out."""
    from yolo_attn.bench.finetune import summarize

    plain = {0: 0.20, 1: 0.22, 2: 0.18, 3: 0.21}
    below = {s: m - 0.005 for s, m in plain.items() if s < 3}
    mixed = {0: 0.21, 1: 0.20, 2: 0.18, 4: 0.5}
    rows = [{"config": c, "seed": s, "map50_95_step0": 0.1, "map50_95": m}
            for c, runs in (("plain", plain), ("below", below), ("mixed", mixed)) for s, m in runs.items()]
    out = {r["config"]: r for r in summarize(rows, ["plain.yaml", "below.yaml", "mixed.yaml"])}
    assert out["plain"]["goal"] == "reference" and out["plain"]["runs"] == 4
    assert out["below"]["d_vs_plain"] == pytest.approx(-0.005) and out["below"]["paired"] == 3
    assert out["below"]["ci95"] == pytest.approx(0, abs=1e-12) and out["below"]["goal"] == "missed"
    assert out["below"]["map50_95_std"] > 0.01  # unpaired, its spread would hide the 0.5 points
    assert out["mixed"]["paired"] == 3 and out["mixed"]["d_vs_plain"] == pytest.approx((0.01 - 0.02 + 0) / 3)
    assert out["mixed"]["goal"] == "within noise" and out["mixed"]["runs"] == 4


def test_finetune_refuses_a_run_folder_made_with_another_version_of_the_config(tmp_path):
    """A finished run of an earlier version of a config is neither reused (its numbers would describe other layers)
    nor overwritten: one line naming the folder; a run of the same config is skipped as finished."""
    from yolo_attn.bench.finetune import FinetuneError, config_fingerprint, finetune_once

    runs = tmp_path / "finetune_runs"
    run = runs / "yolov5n-local-seed0"
    run.mkdir(parents=True)
    result = {"config": "yolov5n-local", "seed": 0, "map50_95_step0": 0.1, "map50_95": 0.2, "transferred": 427,
              "stock_tensors": 427, "run": run.name}
    (run / "result.json").write_text(json.dumps(result))
    (run / "config_fingerprint").write_text(config_fingerprint("yolov5n-local.yaml") + "\n")
    args = ("yolov5n-local.yaml", tmp_path / "missing.pt", "missing.yaml", 5, runs, 1)
    assert finetune_once(*args, seed=0) == result  # same config: finished, skipped (nothing is loaded or trained)
    (run / "config_fingerprint").write_text(config_fingerprint("yolov5n-window.yaml") + "\n")
    with pytest.raises(FinetuneError, match=r"yolov5n-local-seed0 was made with another yolov5n-local.yaml"):
        finetune_once(*args, seed=0)
    assert json.loads((run / "result.json").read_text()) == result
    assert len({config_fingerprint(c) for c in ("yolov5n-local.yaml", "yolov5n-window.yaml", "yolov5s-local.yaml")}) == 3
