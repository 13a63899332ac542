"""``yolo-attn bench gpu`` (issue 10, item 3) without a GPU: the one-line refusal through the CLI entry point, the
report (CSV appended, markdown / PNG regenerated, no absolute paths) from a fake result, and every part's library
code run on CPU at a tiny size (device argument the command line does not expose), so the GPU run starts from code
that has already executed. Timings are not checked."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from yolo_attn.bench import gpu
from yolo_attn.bench.gpu_report import kernel_winners, strip_paths, write_gpu_report
from yolo_attn.cli import entrypoint


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_refuses_without_cuda_in_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert entrypoint(["bench", "gpu", "part=kernels", "quick=True", f"out={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("yolo-attn: error: bench gpu needs a CUDA GPU"), err
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("argv, needle", [
    (["bench", "gpu", "part=kernel"], "part='kernel' is not one of kernels, train, infer, all, amp"),
    (["bench", "gpu", "quick=maybe"], "quick='maybe' must be True or False"),
    (["bench", "gpu", "parts=all"], "unknown argument(s) ['parts'] for 'bench gpu'; allowed: part, quick, out"),
])
def test_bad_arguments_one_line(argv, needle, capsys):
    assert entrypoint(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err


def _fake(run: str, local_flex_ms: float) -> list[dict]:
    common = {"run": run, "gpu": "NVIDIA H100 80GB HBM3", "torch": "2.11.0",
              "command": "yolo-attn bench gpu out=/home/someone/secret/bench"}
    kernels = [{"part": "kernels", "case": "local 80x80", "size": "80x80", "mode": "fwd+bwd", "contender": c,
                "median_ms": ms} for c, ms in (("tiled", 2.0), ("flex", local_flex_ms), ("SDPA + bool mask", 40.0),
                                                ("NATTEN", 3.0))]
    kernels.append({"part": "kernels", "case": "window 80x80", "size": "80x80", "mode": "fwd+bwd",
                    "contender": "tiled", "median_ms": 1.0, "note": "failed at /root/.cache/x.py line 3"})
    train = [{"part": "train", "case": c, "images_per_s": v, "batch": 64, "size": "640"}
             for c, v in (("yolov5s", 1000.0), ("yolov5s-local", 900.0), ("yolov5s-A2C2f (ultralytics)", 800.0))]
    infer = [{"part": "infer", "case": "yolov5s", "contender": "PyTorch", "batch": 1, "median_ms": 3.0}]
    return [{**common, **r} for r in kernels + train + infer]


def test_report_appends_and_regenerates(tmp_path):
    write_gpu_report(_fake("2026-01-01T00:00:00Z", 1.0), tmp_path)
    files = write_gpu_report(_fake("2026-01-02T00:00:00Z", 4.0), tmp_path)
    rows = _rows(files["csv"])
    assert len(rows) == 2 * len(_fake("x", 1.0))  # appended, earlier run kept
    assert {r["run"] for r in rows} == {"2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"}
    md = files["md"].read_text()
    assert "2026-01-02T00:00:00Z" in md and "2026-01-01T00:00:00Z" not in md  # latest run per part
    assert "| local | tiled (2.00x) |" in md  # winner of the latest run: tiled 2 ms vs flex 4 ms
    assert "20.0x faster (goal >= 10x)" in md and "yolov5s-local / yolov5s: 0.90" in md
    everything = files["csv"].read_text() + md
    assert "/home" not in everything and "/root" not in everything and "out=bench" in everything
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_kernel_winners_and_path_stripping():
    rows = _fake("r", 1.0)
    assert kernel_winners(rows) == {"local": {"80x80": "flex (2.00x)"}, "window": {"80x80": "tiled (alone)"}}
    assert strip_paths("a=/x/y/z.pt b c=~/d e=rel/f") == "a=z.pt b c=d e=rel/f"


def test_every_part_runs_on_cpu_at_a_tiny_size(tmp_path, shapes_data, one_thread):
    """kernels (8x8, batch 1, fp32), train (2 steps at 64 px), infer (64 px), amp (1 epoch), then the report."""
    options = {
        "kernels": {"dtype": torch.float32, "batch": 1, "sides": (8,), "patterns": ("full", "local", "window"),
                    "repeats": 1},
        "train": {"models": ("yolov5n-local",), "batch": 2, "imgsz": 64, "warmup": 1, "steps": 2, "rounds": 2},
        "infer": {"models": ("yolov5n-local",), "imgsz": 64, "batches": (1, 2), "repeats": 1},
    }
    lines = []
    rows = gpu.run_gpu_benchmark("all", out_dir=tmp_path, command="yolo-attn bench gpu (test)", device="cpu",
                                 options=options, log=lines.append)
    by = {(r["part"], r["case"], r.get("mode"), r.get("contender")): r for r in rows}
    for mode in ("fwd", "fwd+bwd"):
        for case in ("full 8x8", "local 8x8", "window 8x8"):
            assert math.isfinite(by[("kernels", case, mode, "tiled")]["median_ms"])
        assert math.isfinite(by[("kernels", "local 8x8", mode, "SDPA + bool mask")]["median_ms"])
        assert math.isfinite(by[("kernels", "full 8x8", mode, "SDPA (flash)")]["median_ms"])
    assert math.isfinite(by[("kernels", "local 8x8", "fwd", "flex")]["median_ms"])  # eager flex forward on CPU
    assert "backward on CPU" in by[("kernels", "local 8x8", "fwd+bwd", "flex")]["note"]
    assert any(r["part"] == "kernels" and r["contender"] == "NATTEN" and r.get("note") for r in rows)
    train = by[("train", "yolov5n-local", None, "TrainLoop")]
    assert train["images_per_s"] > 0 and not train.get("note")
    infer = [r for r in rows if r["part"] == "infer" and r["contender"] == "PyTorch"]
    assert [r["batch"] for r in infer] == [1, 2] and all(r["median_ms"] > 0 for r in infer)
    assert any(r["part"] == "infer" and r["contender"] == "TensorRT" and r.get("note") for r in rows)
    assert any("CUDA backend for local" in line for line in lines)  # the winner line feeds the backend table
    md = (tmp_path / "gpu.md").read_text()
    assert "## kernels" in md and "## train" in md and "## infer" in md
    assert len(_rows(tmp_path / "gpu.csv")) == len(rows)

    amp_rows = gpu.amp(device="cpu", configs=["yolov5n-local.yaml"], epochs=1, long_epochs=0, data=shapes_data,
                       imgsz=64, batch=8, workers=0, project=tmp_path / "runs", log=lines.append)
    assert len(amp_rows) == 1 and amp_rows[0]["note"] == "ok", amp_rows
    assert 0.0 <= amp_rows[0]["value"] <= 1.0
