"""``yolo-attn bench accuracy``: accuracy against latency, a fixed training schedule per config and several seeds.

Each (config, seed) is trained with :class:`yolo_attn.YOLO` ``.train`` on the same data and schedule
(runs under ``<out>/accuracy_runs/``); its final validation mAP50-95 is read from the trainer. The configs' CPU
latencies are measured in one interleaved run (:func:`yolo_attn.bench.models.measure_latency`). Output: one CSV row
per run, a markdown table of mean +- std per config, and a PNG of mAP50-95 against latency with the Pareto front.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import models as M
from . import report

__all__ = ["DEFAULT_CONFIGS", "train_once", "run_accuracy_benchmark"]

#: Default comparison: plain YOLOv5n, full attention at P5 (C3TR slot) and the sparse neck patterns.
DEFAULT_CONFIGS = ("yolov5n.yaml", "yolov5n-c3tr.yaml", "yolov5n-local.yaml", "yolov5n-window.yaml",
                   "yolov5n-axial.yaml", "yolov5n-mixed.yaml")


def train_once(cfg: str, data: str, seed: int, project: Path, **train_args: Any) -> dict[str, float]:
    """Train one config with one seed and return its final validation metrics.

    Args:
        cfg: Config name (``yolov5n-local.yaml``) or path.
        data: Data YAML (already resolved to local files).
        seed: Training seed (``deterministic=True``).
        project: Directory the ultralytics run is written under.
        **train_args: ``epochs``, ``imgsz``, ``batch``, ``device``, ... passed to ``train``.

    Returns:
        ``{"map50_95": ..., "map50": ..., "run": run directory}``.
    """
    from ..integration import YOLO

    yolo = YOLO(cfg)
    name = f"{Path(cfg).stem}-seed{seed}"
    yolo.train(data=data, seed=seed, deterministic=True, project=str(project), name=name, exist_ok=True,
               plots=False, verbose=False, **train_args)
    metrics = yolo.trainer.metrics or {}
    return {"map50_95": float(metrics.get("metrics/mAP50-95(B)", float("nan"))),
            "map50": float(metrics.get("metrics/mAP50(B)", float("nan"))),
            "run": str(yolo.trainer.save_dir)}


def run_accuracy_benchmark(
    configs: Iterable[str] = DEFAULT_CONFIGS,
    seeds: Iterable[int] = (0, 1, 2),
    data: str | Path | None = None,
    epochs: int = 30,
    imgsz: int = 320,
    batch: int = 16,
    device: str | None = "cpu",
    latency_imgsz: int | None = None,
    repeats: int = 10,
    workers: int = 0,
    out_dir: str | Path = "benchmarks",
    command: str = "",
) -> list[dict]:
    """Train every config with every seed for a fixed schedule; write ``accuracy.{csv,md,png}``.

    Args:
        configs: Scaled config names (``yolov5n-local.yaml``).
        seeds: Training seeds.
        data: Data YAML; None for the synthetic shapes set (generated locally on first use).
        epochs: Epochs per run (the same schedule for every config).
        imgsz: Training and validation image size.
        batch: Batch size.
        device: Training device (``cpu``, ``0``, ...).
        latency_imgsz: Input size of the CPU latency measurement (default ``imgsz``).
        repeats: Timed rounds of the latency measurement.
        workers: Dataloader workers.
        out_dir: Output directory (training runs go to ``<out_dir>/accuracy_runs``).
        command: Command line recorded in the markdown header.

    Returns:
        Per-config summary rows: ``config, runs, map50_95_mean, map50_95_std, map50_mean, latency_ms, pareto``.
    """
    from ..workflows import resolve_data

    configs, seeds = list(configs), list(seeds)
    data = resolve_data(data)
    out = Path(out_dir)
    project = (out / "accuracy_runs").resolve()
    runs = []
    jobs = [(c, s) for c in configs for s in seeds]
    for cfg, seed in report.progress(jobs, desc="bench accuracy: train"):
        res = train_once(cfg, data, seed, project, epochs=epochs, imgsz=imgsz, batch=batch, device=device,
                         workers=workers)
        runs.append({"config": Path(cfg).stem, "seed": seed, **res})
    lat_size = latency_imgsz or imgsz
    latency = M.measure_latency({Path(c).stem: M.build_model(c) for c in configs}, lat_size, repeats=repeats)
    summary = []
    for cfg in configs:
        name = Path(cfg).stem
        maps = [r["map50_95"] for r in runs if r["config"] == name]
        m50 = [r["map50"] for r in runs if r["config"] == name]
        summary.append({"config": name, "runs": len(maps), "map50_95_mean": statistics.fmean(maps),
                        "map50_95_std": statistics.stdev(maps) if len(maps) > 1 else 0.0,
                        "map50_mean": statistics.fmean(m50), "latency_ms": latency[name]})
    front = report.pareto_front([(r["latency_ms"], r["map50_95_mean"]) for r in summary])
    for i, r in enumerate(summary):
        r["pareto"] = i in front
    for r in runs:
        r["latency_ms"] = latency[r["config"]]
    report.write_csv(runs, out / "accuracy.csv", ["config", "seed", "map50_95", "map50", "latency_ms", "run"])
    notes = report.header_notes(command) + [
        f"Data {data}; {epochs} epochs at imgsz {imgsz}, batch {batch}, device {device}, seeds {seeds} "
        f"(deterministic). mAP from the final validation of each run; latency: CPU, batch 1, imgsz {lat_size}, "
        f"median of {repeats} interleaved rounds. pareto = no other config is both faster and more accurate."
    ]
    report.write_markdown(summary, out / "accuracy.md", "Accuracy vs latency", notes)
    report.plot_pareto({r["config"]: (r["latency_ms"], r["map50_95_mean"], r["map50_95_std"]) for r in summary},
                       out / "accuracy.png", f"mAP50-95 vs CPU latency ({epochs} epochs, {len(seeds)} seeds)",
                       f"CPU latency at {lat_size} px (ms)", "mAP50-95 (mean ± std over seeds)")
    return summary
