"""`yolo-attn bench accuracy`: a smoke-sized study (2 configs x 2 seeds x 1 epoch at 64 px, 2 runs at once), the
re-launch that skips finished runs, a run stopped after epoch 1 of 2 and resumed from its last.pt in another folder
(restored from a pack), the report's statistics and wording on a ledger with known numbers, and argument errors.

Training runs in worker processes on CPU; timings are never asserted (shared machines).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
import tarfile
from pathlib import Path

import pytest

from yolo_attn.bench import report
from yolo_attn.bench.state import pack_state, unpack_state
from yolo_attn.bench.study import LEDGER_COLUMNS, Recipe, StudyError, append_ledger, pin_recipe, read_ledger
from yolo_attn.bench.trainrun import _checkpoint_state
from yolo_attn.cli import entrypoint

TINY = ["epochs=1", "imgsz=64", "batch=8", "device=cpu", "reps=1"]


def _csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _no_absolute_paths(text: str, tmp: Path) -> None:
    assert str(tmp) not in text and str(Path.home()) + "/" not in text
    assert not re.search(r"(^|[\s`=(\[])/[A-Za-z]", text), re.search(r"(^|[\s`=(\[])/[A-Za-z].{0,40}", text)


@pytest.fixture(scope="module")
def study(tmp_path_factory, shapes_data):
    """One smoke study: plain + local, seeds 0 and 1, one epoch at 64 px, two runs at once; all parts."""
    tmp = tmp_path_factory.mktemp("study")
    runs, out = tmp / "runs", tmp / "bench"
    argv = ["bench", "accuracy", "configs=plain,local", "seeds=0,1", *TINY, "jobs=2", f"data={shapes_data}",
            f"runs={runs}", f"out={out}", "name=acc"]
    assert entrypoint(argv) == 0
    return {"tmp": tmp, "runs": runs, "out": out, "argv": argv}


def test_study_appends_one_row_per_run(study):
    ledger = read_ledger(study["runs"])
    assert sorted((r["config"], r["seed"]) for r in ledger) == [
        ("yolov5n", "0"), ("yolov5n", "1"), ("yolov5n-local", "0"), ("yolov5n-local", "1")]
    assert list(ledger[0]) == list(LEDGER_COLUMNS)
    for r in ledger:
        assert 0.0 <= float(r["map50_95"]) <= float(r["map50"]) <= 1.0
        assert r["epochs"] == "1" and r["launches"] == "1" and r["device"] == "cpu" and r["dataset"] == "shapes"
        assert float(r["gpu_min"]) > 0 and float(r["wall_min"]) >= float(r["gpu_min"])  # 2 runs shared the CPU
        assert 1.0 <= float(r["concurrency"]) <= 2.0 + 1e-6
        assert float(r["epoch_s"]) > 0 and r["optimizer"] and r["software"].startswith("python ")
        run = study["runs"] / r["run"]
        assert (run / "weights" / "last.pt").is_file() and json.loads((run / "result.json").read_text())
    rows = _csv(study["out"] / "acc.csv")
    assert len(rows) == 4
    for r in rows:
        assert all(math.isfinite(float(r[k])) and float(r[k]) > 0 for k in ("params_M", "gflops_640", "latency_ms"))
    cost = {r["config"]: r for r in _csv(study["runs"] / "cost.csv")}
    assert set(cost) == {"yolov5n", "yolov5n-local"} and cost["yolov5n"]["latency_imgsz"] == "64"


def test_relaunch_skips_finished_runs(study, capsys):
    before = (study["runs"] / "runs.csv").read_text()
    mtimes = {p: p.stat().st_mtime_ns for p in study["runs"].glob("*/weights/last.pt")}
    capsys.readouterr()
    assert entrypoint([*study["argv"], "part=train"]) == 0
    assert "4 run(s) done, 0 to train" in capsys.readouterr().out
    assert (study["runs"] / "runs.csv").read_text() == before
    assert {p: p.stat().st_mtime_ns for p in study["runs"].glob("*/weights/last.pt")} == mtimes
    assert all(json.loads(p.read_text())["launches"] == 1 for p in study["runs"].glob("*/study.json"))


def test_report_files_name_no_absolute_paths(study):
    md = (study["out"] / "acc.md").read_text()
    assert "Command: `yolo-attn bench accuracy" in md and "torch" in md and "Dataset: shapes" in md
    assert "## Interpretation" in md and "Goal check" in md and "| yolov5n-local |" in md
    assert "Training command(s): `yolo-attn bench accuracy configs=plain,local seeds=0,1" in md
    _no_absolute_paths(md, study["tmp"])
    _no_absolute_paths((study["out"] / "acc.csv").read_text(), study["tmp"])
    png = (study["out"] / "acc.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and str(study["tmp"]).encode() not in png


def test_stopped_run_resumes_from_last_pt_in_another_folder(tmp_path, shapes_data):
    """Epoch 1 of 2 in launch 1 (then paused and packed); the folder is lost; launch 2 restores it elsewhere and
    trains epoch 2 only, from last.pt, on ultralytics' peer C3TR written as a YAML model file."""
    first, pack = tmp_path / "machine1", tmp_path / "pack"
    common = ["bench", "accuracy", "configs=c3tr-ultralytics", "seeds=3", *TINY, "epochs=2", f"data={shapes_data}",
              "part=train"]
    # the default pack_mb=20 holds the unfinished checkpoint (24 MiB as ultralytics writes it) once its AdamW state
    # travels in bfloat16
    assert entrypoint([*common, f"runs={first}", "epochs_per_launch=1", f"pack={pack}"]) == 0
    run = first / "yolov5n-C3TR-ultralytics-s3"
    assert read_ledger(first) == [] and not (run / "result.json").exists()
    assert json.loads((run / "progress.json").read_text())["epoch"] == 1 and (run / "weights" / "last.pt").is_file()
    assert (first / "models" / "yolov5n-C3TR-ultralytics.yaml").is_file()
    parts = sorted(pack.glob("state.tar.*"))
    assert parts and all(p.stat().st_size <= 15 * 2**20 for p in parts)

    second = tmp_path / "machine2"  # another path: ultralytics' resume must write there, not to machine1
    moved = first.rename(tmp_path / "lost")
    assert entrypoint([*common, f"runs={second}", f"restore={pack}", "part=train,report", f"out={tmp_path}"]) == 0
    run2 = second / run.name
    (row,) = read_ledger(second)
    assert (row["config"], row["seed"], row["epochs"], row["launches"]) == ("yolov5n-C3TR-ultralytics", "3", "2", "2")
    progress = json.loads((run2 / "progress.json").read_text())
    assert [(e["epoch"], e["launch"]) for e in progress["epochs"]] == [(1, 1), (2, 2)]
    assert progress["starts"][-1]["resumed_from"] == 1
    assert [r["epoch"] for r in _csv(run2 / "results.csv")] == ["1", "2"]
    assert not (moved / run.name / "result.json").exists() and not first.exists()
    md = (tmp_path / "accuracy-shapes.md").read_text()  # no part=latency: params and GFLOPs counted for the report
    assert "latency: not measured yet (part=latency)" in md and "| yolov5n-C3TR-ultralytics | peer | 1 |" in md
    (out_row,) = _csv(tmp_path / "accuracy-shapes.csv")
    assert float(out_row["gflops_640"]) > 1 and float(out_row["params_M"]) > 1 and out_row["latency_ms"] == ""
    assert (tmp_path / "accuracy-shapes.png").is_file()


def _ledger(study_dir: Path, values: dict[str, list[float]]) -> None:
    for config, maps in values.items():
        for seed, m in enumerate(maps):
            append_ledger(study_dir, {"config": config, "seed": seed, "map50_95": m, "map50": m + 0.2, "epochs": 60,
                                      "gpu_min": 1.0, "epoch_s": 2.0, "device": "NVIDIA H100",
                                      "run": f"{config}-s{seed}"})


def _costs(study_dir: Path, latency: dict[str, float | None]) -> None:
    report.write_csv([{"config": k, "params_M": 2.5, "gflops_640": 7.5 + len(k) / 10, "latency_ms": v,
                       "latency_imgsz": 320,
                       "threads": 2, "repeats": 10, "cpu": "test"} for k, v in latency.items()], study_dir / "cost.csv")


def _report(tmp_path, shapes_data, monkeypatch) -> tuple[str, dict]:
    seen = {}
    original = report.plot_pareto

    def spy(points, path, *args):
        seen.update(points)
        return original(points, path, *args)

    monkeypatch.setattr(report, "plot_pareto", spy)
    argv = ["bench", "accuracy", "part=report", f"data={shapes_data}", f"runs={tmp_path / 'study'}",
            f"out={tmp_path / 'out'}", "name=r", "configs=plain,local,window,a2c2f-ultralytics"]
    assert entrypoint(argv) == 0
    return (tmp_path / "out" / "r.md").read_text(), seen


def test_report_error_bars_and_goal_met(tmp_path, shapes_data, monkeypatch):
    values = {"yolov5n": [0.300, 0.310, 0.320], "yolov5n-local": [0.330, 0.345, 0.350],
              "yolov5n-window": [0.305, 0.330, 0.310], "yolov5n-A2C2f-ultralytics": [0.310, 0.312, 0.314]}
    _ledger(tmp_path / "study", values)
    _costs(tmp_path / "study", {"yolov5n": 40.0, "yolov5n-local": 48.0, "yolov5n-window": 60.0,
                                "yolov5n-A2C2f-ultralytics": 110.0})
    md, seen = _report(tmp_path, shapes_data, monkeypatch)
    assert set(seen) == set(values)
    for config, maps in values.items():
        x, mean, std = seen[config]
        assert mean == pytest.approx(statistics.fmean(maps)) and std == pytest.approx(statistics.stdev(maps))
    assert seen["yolov5n-local"][0] == 48.0  # plotted against the measured latency
    assert "Beats plain beyond noise: `yolov5n-local` (+3.17 points" in md and "1.20x plain's CPU latency" in md
    assert "### Goal check: MET" in md and "Best candidate: `yolov5n-local`" in md and "Next: try" not in md
    window = next(line for line in md.splitlines() if line.startswith("| yolov5n-window |"))
    assert window.startswith("| yolov5n-window | attention | 3 | 31.50 ± 1.32 |")
    assert window.split(" | ")[7] == "no"  # beyond_noise: +0.50 points is within 2SE
    beats = next(line for line in md.splitlines() if line.startswith("Beats plain beyond noise:"))
    assert "yolov5n-window" not in beats


def test_report_says_plainly_when_nothing_beats_plain(tmp_path, shapes_data, monkeypatch):
    values = {"yolov5n": [0.300, 0.320, 0.310], "yolov5n-local": [0.305, 0.330, 0.300]}
    _ledger(tmp_path / "study", values)
    _costs(tmp_path / "study", {"yolov5n": None, "yolov5n-local": None})  # latency not measured yet
    md, seen = _report(tmp_path, shapes_data, monkeypatch)
    assert "**No attention config beats plain yolov5n beyond noise on shapes with this schedule.**" in md
    two_se = 2 * math.sqrt(sum(statistics.variance(v) / len(v) for v in values.values()))
    assert f"The largest difference is `yolov5n-local` (+0.17 points, 2SE {100 * two_se:.2f})" in md
    assert "### Goal check: NOT MET" in md and "| gain over plain >= 1.0 mAP50-95 point | +0.17 points | no |" in md
    assert "Next: try the change these numbers point to (placement P3/P4/P5" in md
    assert "latency: not measured yet (part=latency)" in md and "| CPU latency <= 1.25x plain | n/a | unknown |" in md
    assert seen["yolov5n"][0] == pytest.approx(7.5 + len("yolov5n") / 10)  # plotted against GFLOPs meanwhile


@pytest.mark.parametrize(
    "words, needle",
    [
        (["configs=plain,nope"], "configs: unknown config 'nope'; allowed: plain, "),
        (["seeds=a"], "seeds: 'a' is not an integer"),
        (["seeds=0,0"], "seeds: 0 is given twice"),
        (["seeds=-1"], "seeds: -1 is negative"),
        (["seeds="], "seeds: none given"),
        (["jobs=0"], "jobs=0 must be an integer >= 1"),
        (["jobs=two"], "jobs='two' must be an integer >= 1"),
        (["time_budget=0"], "time_budget=0 must be a number of minutes > 0"),
        (["epochs=0"], "epochs=0 must be a positive integer"),
        (["part=train,plot"], "part=train,plot: allowed: train, latency, report or all"),
        (["reps=0"], "reps=0 must be an integer >= 1"),
        (["job=2"], "unknown argument(s) ['job'] for 'bench accuracy'"),
    ],
)
def test_argument_errors_are_one_line(words, needle, shapes_data, tmp_path, capsys):
    argv = ["bench", "accuracy", f"data={shapes_data}", f"runs={tmp_path / 'r'}", f"out={tmp_path / 'o'}", *words]
    assert entrypoint(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("yolo-attn: error: ") and err.count("\n") == 1, err
    assert needle in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "o").exists()


def test_other_recipe_in_same_folder_is_refused(shapes_data, tmp_path, capsys):
    pin_recipe(tmp_path / "r", Recipe(str(shapes_data), epochs=1, imgsz=64))
    argv = ["bench", "accuracy", f"data={shapes_data}", f"runs={tmp_path / 'r'}", "epochs=2", "imgsz=64", "part=train"]
    assert entrypoint(argv) == 2
    assert "this study was started with another recipe: epochs=2 (study has 1)" in capsys.readouterr().err
    assert "epochs: 1" in (tmp_path / "r" / "study.yaml").read_text()


def test_unpack_keeps_newer_files_merges_ledger_refuses_unsafe(tmp_path):
    src = tmp_path / "a"
    pin_recipe(src, Recipe("d/highway-320/data.yaml"))
    append_ledger(src, {"config": "yolov5n", "seed": 0, "map50_95": 0.1})
    append_ledger(src, {"config": "yolov5n", "seed": 1, "map50_95": 0.2})
    (src / "yolov5n-s2").mkdir()
    (src / "yolov5n-s2" / "spec.json").write_text("{}")
    (src / "yolov5n-s2" / "progress.json").write_text('{"epoch": 5}')
    pack_state(src, tmp_path / "p")
    dst = tmp_path / "b"
    append_ledger(dst, {"config": "yolov5n", "seed": 1, "map50_95": 0.25})
    (dst / "yolov5n-s2").mkdir()
    (dst / "yolov5n-s2" / "progress.json").write_text('{"epoch": 7}')
    assert unpack_state(tmp_path / "p", dst) > 0
    assert {(r["seed"], r["map50_95"]) for r in read_ledger(dst)} == {("0", "0.1"), ("1", "0.25")}
    assert json.loads((dst / "yolov5n-s2" / "progress.json").read_text())["epoch"] == 7
    assert (dst / "study.yaml").is_file() and (dst / "yolov5n-s2" / "spec.json").is_file()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../evil")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "state.tar.000").write_bytes(buf.getvalue())
    with pytest.raises(StudyError, match="unsafe or unexpected member '../evil'"):
        unpack_state(bad, tmp_path / "c")
    assert not (tmp_path / "evil").exists()


def test_unreadable_checkpoint_restarts_the_run(tmp_path):
    last = tmp_path / "last.pt"
    last.write_bytes(b"cut short by a kill")
    notes: list[str] = []
    assert _checkpoint_state(last, notes) == (None, None)
    assert notes and "restarting this run from scratch" in notes[0]


def test_pause_and_start_decisions_of_the_time_budget():
    from yolo_attn.bench.scheduler import start_fits
    from yolo_attn.bench.trainrun import SAFETY, pause_reason

    assert pause_reason(0.0, None, [50.0], None, 9, None) is None  # no budget, no limit
    assert pause_reason(0.0, 100.0, [], None, 0, None) is None  # nothing known yet: train (the hard stop guards)
    assert pause_reason(0.0, 100.0, [], 90.0, 0, None) is not None  # the study's estimate says it will not fit
    assert pause_reason(0.0, 100.0, [10.0, 90.0, 20.0], None, 3, None) is not None  # slowest recent epoch counts
    assert pause_reason(0.0, 100.0, [10.0, 20.0, 30.0], None, 3, None) is None
    assert pause_reason(0.0, 100.0, [], 100.0 / SAFETY - 1, 0, None) is None
    assert pause_reason(0.0, None, [], None, 2, 2) == "epochs_per_launch=2 reached"
    assert pause_reason(0.0, None, [], None, 1, 2) is None
    assert start_fits(0.0, None, 1e9, 1e9) and start_fits(0.0, 10.0, None, None)
    assert start_fits(0.0, 90.0, 50.0, 40.0) is False and start_fits(0.0, 90.0, 50.0, 30.0) is True


def test_a_run_trained_elsewhere_is_not_started_twice(tmp_path):
    from yolo_attn.bench.trainrun import EXIT_BUSY, _lock, train_run

    held = _lock(tmp_path)
    assert held is not None
    assert train_run(tmp_path) == EXIT_BUSY  # before reading spec.json: nothing of the run is touched
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]
    held.close()
