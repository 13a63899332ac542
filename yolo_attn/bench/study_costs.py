"""Costs of the configs of an accuracy study: parameters, GFLOPs at 640 and interleaved CPU latency (``cost.csv``).

Models are built with the dataset's class count (the head's size depends on it). GFLOPs are counted at the real
640x640 input with attention matmuls, latency is timed interleaved (:mod:`yolo_attn.bench.models`), batch 1.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import models as M
from . import report
from .study import StudyConfig, StudyError

__all__ = ["COST_COLUMNS", "Timing", "count_costs", "measure_costs", "read_costs"]

COST_COLUMNS = ("config", "params_M", "gflops_640", "latency_ms", "latency_imgsz", "threads", "repeats", "cpu")


@dataclass(frozen=True)
class Timing:
    """How ``part=latency`` times the configs (batch 1, fused, eval, interleaved rounds, median).

    Args:
        imgsz: Input size of the latency measurement; None: the recipe's ``imgsz``.
        repeats: Timed rounds (each runs every config once).
        threads: torch CPU threads during the measurement.

    Examples:
        >>> Timing(repeats=20).threads
        2
    """

    imgsz: int | None = None
    repeats: int = 10
    threads: int = 2

    def __post_init__(self) -> None:
        for key in ("repeats", "threads"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise StudyError(f"{'reps' if key == 'repeats' else key}={v!r} must be an integer >= 1")


def _nc(data: str) -> int:
    from ..integration import check_dataset_local

    return int(check_dataset_local(data)["nc"])


def _build(config: StudyConfig, nc: int) -> Any:
    import copy

    from ultralytics.nn.tasks import yaml_model_load

    from ..integration import resolve_config

    d = copy.deepcopy(config.model) if isinstance(config.model, dict) \
        else yaml_model_load(str(resolve_config(config.model)))
    d["nc"] = nc
    return M.build_model(d)


def read_costs(study: Path) -> dict[str, dict[str, str]]:
    """Rows of ``<study>/cost.csv`` by config (empty when there is none).

    Examples:
        >>> read_costs(Path("runs/accuracy-shapes"))["yolov5n"]["latency_ms"]  # doctest: +SKIP
        '40.2'
    """
    path = study / "cost.csv"
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        return {r["config"]: r for r in csv.DictReader(f)}


def measure_costs(study_dir: str | Path, configs: Sequence[StudyConfig], data: str, timing: Timing,
                  default_imgsz: int) -> list[dict[str, Any]]:
    """Params, GFLOPs at 640 and interleaved CPU latency of ``configs`` (``nc`` of the data); merged into cost.csv.

    Args:
        study_dir: The study folder (rows of other configs in its ``cost.csv`` are kept).
        configs: Configs to measure, all in one interleaved run.
        data: Data YAML (for the class count of the head).
        timing: Latency settings.
        default_imgsz: Latency input size when ``timing.imgsz`` is None.

    Returns:
        The measured rows.

    Examples:
        >>> rows = measure_costs("runs/s", resolve_configs(["plain"]), "data.yaml", Timing(), 320)  # doctest: +SKIP
    """
    nc = _nc(data)
    nets = {c.name: _build(c, nc) for c in report.progress(configs, desc="bench accuracy: build")}
    size = timing.imgsz or default_imgsz
    lat = M.measure_latency(nets, size, repeats=timing.repeats, threads=timing.threads)
    cpu = report.machine_info()["cpu"]
    rows = [{"config": k, "params_M": round(M.count_params(m) / 1e6, 4), "gflops_640": round(M.count_gflops(m, 640), 4),
             "latency_ms": round(lat[k], 3), "latency_imgsz": size, "threads": timing.threads,
             "repeats": timing.repeats, "cpu": cpu} for k, m in nets.items()]
    study = Path(study_dir)
    merged = {**read_costs(study), **{r["config"]: r for r in rows}}
    report.write_csv(list(merged.values()), study / "cost.csv", COST_COLUMNS)
    return rows


def count_costs(configs: Sequence[StudyConfig], data: str) -> dict[str, dict[str, float]]:
    """Parameters (M) and GFLOPs at 640 of ``configs`` without timing them (exact counts, a few seconds each).

    Args:
        configs: Configs to count.
        data: Data YAML (class count of the head).

    Returns:
        ``{config: {"params_M", "gflops_640"}}``.

    Examples:
        >>> count_costs(resolve_configs(["plain"]), "data.yaml")["yolov5n"]["params_M"]  # doctest: +SKIP
        2.509
    """
    nc = _nc(data)
    out = {}
    for c in configs:
        m = _build(c, nc)
        out[c.name] = {"params_M": M.count_params(m) / 1e6, "gflops_640": M.count_gflops(m, 640)}
    return out
