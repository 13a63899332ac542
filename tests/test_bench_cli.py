"""`yolo-attn bench attention|models` at tiny sizes: the files are written and every number is finite.

`bench accuracy` has its own tests (tests/test_bench_accuracy.py).

Timings are not checked (shared CI machines); every output goes under tmp_path.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from yolo_attn.bench.report import markdown_table, pareto_front, write_csv
from yolo_attn.cli import entrypoint


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _assert_outputs(out: Path, name: str, numeric: tuple[str, ...]) -> list[dict]:
    for suffix in (".csv", ".md", ".png"):
        f = out / f"{name}{suffix}"
        assert f.is_file() and f.stat().st_size > 100, f
    assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = _rows(out / f"{name}.csv")
    assert rows
    for row in rows:
        for key in numeric:
            assert math.isfinite(float(row[key])), (key, row)
    md = (out / f"{name}.md").read_text()
    assert "Command: `yolo-attn bench" in md and "torch" in md  # machine, versions, exact command
    return rows


def test_bench_attention_tiny(tmp_path):
    out = tmp_path / "bench"
    # flex=False: compiling FlexAttention on CPU takes ~25 s; the flag must leave its contender out
    assert entrypoint(["bench", "attention", "sizes=64", "patterns=local,axial", "reps=1", "flex=False",
                       f"out={out}"]) == 0
    pngs, csvs = list(out.glob("*.png")), list(out.glob("*.csv"))
    assert pngs and csvs and list(out.glob("*.md"))
    rows = _rows(csvs[0])
    assert rows and "FlexAttention" not in csvs[0].read_text() and "local" in csvs[0].read_text()
    numbers = [float(v) for row in rows for v in row.values() if v not in ("", None) and _is_number(v)]
    assert numbers and all(math.isfinite(x) for x in numbers)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_bench_models_tiny(tmp_path):
    out = tmp_path / "bench"
    argv = ["bench", "models", "configs=yolov5.yaml,yolov5-local.yaml", "imgsz=64", "reps=2", "warmup=0",
            "peers=False", f"out={out}"]
    assert entrypoint(argv) == 0
    ratios = ("torch_x", "onnx_x", "openvino_x")
    rows = _assert_outputs(out, "models", ("params_M", "gflops", "torch_ms", "onnx_ms", "openvino_ms", *ratios))
    assert [r["model"] for r in rows] == ["yolov5n", "yolov5n-local"]
    assert all(float(r["gflops"]) > 0 and float(r["params_M"]) > 0 for r in rows)
    assert all(float(rows[0][k]) == 1.0 for k in ratios)  # the reference, paired with itself in every round
    assert all(float(r[k]) > 0 for r in rows for k in ratios)
    text = (out / "models.md").read_text()
    assert "paired" in text and "Goal (every attention config" in text and "yolov5n-local" in text


def test_bench_models_peers_build_and_run():
    """The peers the models benchmark times (ultralytics' C3TR and A2C2f placed in YOLOv5) build and run."""
    import torch

    from yolo_attn.bench import models as M
    from yolo_attn.bench.peers import peer_configs

    names = list(peer_configs("n"))
    assert names == ["yolov5n-C3TR (ultralytics)", "yolov5n-A2C2f (ultralytics)"]
    for name, cfg in peer_configs("n").items():
        model = M.build_model(cfg).eval()
        assert type(model.model[8]).__name__ in {"C3TR", "A2C2f"}, name
        with torch.no_grad():
            assert model(torch.zeros(1, 3, 64, 64))[0].shape[:2] == (1, 84), name


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["bench"], "bench needs one of: attention, models, accuracy"),
        (["bench", "speed"], "bench needs one of"),
        (["bench", "models", "imgsize=64"], "unknown argument(s) ['imgsize']"),
        (["info"], "info needs model="),
        (["show"], "show needs pattern=NAME"),
        (["show", "pattern=local", "size=8by8"], "size='8by8' must be a pair"),
        (["show", "pattern=nope"], "unknown attention pattern 'nope'"),
        (["show", "attention", "model=yolov5n-local.yaml"], "show attention needs source=..., point=..."),
    ],
)
def test_usage_errors_one_line(argv, needle, capsys):
    assert entrypoint(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("yolo-attn: error: ") and err.count("\n") == 1, err
    assert needle in err


def test_report_writers(tmp_path):
    rows = [{"a": 1, "b": 0.123456}, {"a": 2, "c": None}]
    f = write_csv(rows, tmp_path / "x.csv")
    assert f.read_text().splitlines()[0] == "a,b,c"
    assert markdown_table(rows).splitlines()[2] == "| 1 | 0.1235 |  |"
    assert pareto_front([(1.0, 0.5), (2.0, 0.4), (3.0, 0.7), (3.0, 0.6)]) == [0, 2]
