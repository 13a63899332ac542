"""``yolo-attn bench accuracy``: a fair, resumable study of accuracy against cost, in parts.

- ``train``: every (config, seed) trained with one recipe (:class:`~yolo_attn.bench.study.Recipe`), ``jobs`` at a
  time on one device, resumable, within a time budget (:func:`yolo_attn.bench.scheduler.run_study`); one ledger row
  per finished run in ``<runs>/runs.csv``.
- ``latency``: parameters, GFLOPs at 640 (attention matmuls included) and CPU latency of every config, timed
  interleaved (:mod:`yolo_attn.bench.models`), into ``<runs>/cost.csv``. Separate from training so that a GPU
  launch spends nothing on it and the latencies come from an otherwise idle CPU machine.
- ``report``: ``<out>/<name>.csv`` (one row per run, costs joined), ``<name>.md`` (machine, versions, command,
  dataset, recipe, mean +- std per config, the comparison with plain and the goal check of
  :mod:`yolo_attn.bench.verdict`) and ``<name>.png`` (mAP50-95 against CPU latency, error bars = std over seeds;
  against GFLOPs while no latency is measured).

``restore=DIR`` / ``pack=DIR`` move a study between machines (:func:`yolo_attn.bench.study.pack_state`).
"""

from __future__ import annotations

import csv
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import models as M
from . import report, verdict
from .scheduler import Launch, run_study
from .study import (
    LEDGER_COLUMNS, Recipe, StudyConfig, StudyError, dataset_name, pack_state, parse_seeds, pin_recipe, read_ledger,
    resolve_configs, roles, unpack_state,
)

__all__ = ["PARTS", "Launch", "Recipe", "Timing", "measure_costs", "run_accuracy_benchmark", "write_report"]

PARTS = ("train", "latency", "report")
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


def parse_parts(parts: str | Iterable[str]) -> list[str]:
    """Check ``part=`` words (``all`` = train, latency, report); returned in execution order.

    Examples:
        >>> parse_parts("report,train")
        ['train', 'report']
    """
    words = [p.strip().lower() for p in (parts.split(",") if isinstance(parts, str) else parts) if str(p).strip()]
    if "all" in words:
        words = [w for w in words if w != "all"] + list(PARTS)
    bad = [w for w in words if w not in PARTS]
    if bad or not words:
        raise StudyError(f"part={','.join(words) or '(none)'}: allowed: {', '.join(PARTS)} or all (comma-separated)")
    return [p for p in PARTS if p in words]


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


def _read_costs(study: Path) -> dict[str, dict[str, str]]:
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
    merged = {**_read_costs(study), **{r["config"]: r for r in rows}}
    report.write_csv(list(merged.values()), study / "cost.csv", COST_COLUMNS)
    return rows


def _portable(command: str) -> str:
    """The command with absolute path values shortened (no machine's folder layout in committed reports)."""
    cwd = Path.cwd()
    words = []
    for w in shlex.split(command):
        key, eq, val = w.partition("=")
        if eq and (val.startswith(("/", "~"))):
            p = Path(val).expanduser()
            try:
                val = str(p.relative_to(cwd))
            except ValueError:
                val = "<...>/" + "/".join(p.parts[-2:])
            w = f"{key}={val}"
        words.append(w)
    return shlex.join(words)


def write_report(
    study_dir: str | Path,
    configs: Sequence[StudyConfig],
    recipe: Recipe,
    out_dir: str | Path,
    name: str,
    command: str = "",
) -> list[dict[str, Any]]:
    """Write ``<out>/<name>.csv``, ``.md`` and ``.png`` from the ledger and cost.csv of a study.

    Args:
        study_dir: The study folder.
        configs: Configs to report first, in this order (other configs found in the ledger follow).
        recipe: The study's recipe (for the header).
        out_dir: Output folder.
        name: File stem (``accuracy-highway``).
        command: Command line for the header (absolute paths are shortened).

    Returns:
        The per-config summary rows (:func:`yolo_attn.bench.verdict.summarize`).
    """
    study, out = Path(study_dir), Path(out_dir)
    runs = read_ledger(study)
    names = list(dict.fromkeys([c.name for c in configs] + [r["config"] for r in runs]))
    costs = _read_costs(study)
    known = {**{c.name: c for c in resolve_configs(None)}, **{c.name: c for c in configs}}
    missing = [known[n] for n in names if n in known and n not in costs and any(r["config"] == n for r in runs)]
    if missing:  # exact counts are cheap; latency needs part=latency
        nc = _nc(recipe.data)
        for c in missing:
            m = _build(c, nc)
            costs[c.name] = {"params_M": M.count_params(m) / 1e6, "gflops_640": M.count_gflops(m, 640)}
    summary = verdict.summarize(runs, roles(names), costs, names)
    per_run = [{**r, **{k: costs.get(r["config"], {}).get(k) for k in ("params_M", "gflops_640", "latency_ms")}}
               for r in runs]
    report.write_csv(per_run, out / f"{name}.csv", [*LEDGER_COLUMNS, "params_M", "gflops_640", "latency_ms"])
    dataset = recipe.pinned()["dataset"]
    lat_note = next((f"latency: CPU ({c.get('cpu')}), batch 1, imgsz {c.get('latency_imgsz')}, "
                     f"{c.get('threads')} threads, median of {c.get('repeats')} interleaved rounds"
                     for c in costs.values() if c.get("latency_ms")), "latency: not measured yet (part=latency)")
    devices = sorted({r["device"] for r in runs if r.get("device")})
    software = sorted({r["software"] for r in runs if r.get("software")})
    trained_by = (study / "commands.txt").read_text().split("\n") if (study / "commands.txt").is_file() else []
    optimizers = sorted({r["optimizer"] for r in runs if r.get("optimizer")})
    share = [float(r["concurrency"]) for r in runs if r.get("concurrency")]
    gpu_total = sum(float(r["gpu_min"]) for r in runs if r.get("gpu_min"))
    notes = report.header_notes(_portable(command)) + [
        f"Dataset: {dataset} (data YAML `{Path(recipe.data).name}` in folder `{Path(recipe.data).parent.name}`; "
        "see the dataset's PROVENANCE.txt for source and licence).",
        f"Recipe (identical for every run): {recipe.epochs} epochs at imgsz {recipe.imgsz}, batch {recipe.batch}, "
        f"validation {'every epoch' if recipe.val else 'at the final epoch only'}, early stopping off, "
        f"ultralytics' default hyperparameters (optimizer auto: {', '.join(optimizers) or 'n/a'}), deterministic, "
        "seeds as listed. "
        "mAP: validation of the final epoch's EMA weights (no best-epoch selection).",
        "Training command(s): " + ("; ".join(f"`{c}`" for c in trained_by if c) or "n/a") + ".",
        f"Training: {', '.join(devices) or 'n/a'} ({'; '.join(software) or 'n/a'}); runs training at once on the "
        "device, averaged over each run's "
        f"life: {f'{min(share):.1f} to {max(share):.1f}' if share else 'n/a'}; {gpu_total:.1f} GPU-min for the "
        f"{len(runs)} finished run(s). GPU-min per run = wall time x the "
        f"share of the device held (1 / runs training at that moment); epoch_s = median wall seconds per epoch. "
        f"{lat_note}. GFLOPs at 640x640 with attention matmuls.",
    ]
    cols = ["config", "role", "runs", "mAP50-95", "mAP50", "d_vs_plain", "2SE", "beyond_noise", "params_M",
            "gflops_640", "latency_ms", "latency_x", "epoch_s", "gpu_min"]
    table = [{"config": r["config"], "role": r["role"], "runs": r["runs"],
              "mAP50-95": _pm(r["map50_95_mean"], r["map50_95_std"]), "mAP50": _pm(r["map50_mean"], r["map50_std"]),
              "d_vs_plain": None if r["d_map50_95"] is None else f"{100 * r['d_map50_95']:+.2f}",
              "2SE": None if r["two_se"] is None else f"{100 * r['two_se']:.2f}",
              "beyond_noise": {True: "yes", False: "no"}.get(r["beyond_noise"]),
              **{k: r[k] for k in ("params_M", "gflops_640", "latency_ms", "epoch_s", "gpu_min")},
              "latency_x": None if r["latency_x"] is None else f"{r['latency_x']:.2f}x"} for r in summary]
    goal = verdict.goal_check(summary)
    body = [report.markdown_table(table, cols), "",
            "mAP values in points (x100), mean ± sample std over seeds; d_vs_plain and 2SE in points.", "",
            *verdict.interpretation(summary, goal, dataset), "", "## Runs", "", *_in_progress(study, runs, recipe),
            report.markdown_table([{k: _number(v) for k, v in r.items()} for r in runs],
                                  ["config", "seed", "map50_95", "map50", "epoch_s", "wall_min", "gpu_min",
                                   "launches", "device"]) if runs else "No finished runs yet."]
    out.mkdir(parents=True, exist_ok=True)
    paragraphs = [line for note in notes for line in (note, "")]
    (out / f"{name}.md").write_text("\n".join([f"# Accuracy vs cost on {dataset}", "", *paragraphs, *body, ""]))
    points = {r["config"]: r for r in summary if r["runs"]}
    use_latency = bool(points) and all(r["latency_ms"] for r in points.values())
    xkey = "latency_ms" if use_latency else "gflops_640"
    if points and all(r[xkey] for r in points.values()):
        report.plot_pareto(
            {k: (r[xkey], r["map50_95_mean"], r["map50_95_std"] or 0.0) for k, r in points.items()},
            out / f"{name}.png",
            f"{dataset}: mAP50-95 vs {'CPU latency' if use_latency else 'GFLOPs'} "
            f"({recipe.epochs} epochs, error bars = std over seeds)",
            "CPU latency (ms)" if use_latency else "GFLOPs at 640 (latency not measured yet)",
            "mAP50-95 (mean ± std over seeds)")
    return summary


def _record_command(study: Path, command: str) -> None:
    """Add this launch's command line (absolute paths shortened) to ``commands.txt`` unless it is there already."""
    if not command:
        return
    path = study / "commands.txt"
    have = path.read_text().splitlines() if path.is_file() else []
    line = _portable(command)
    if line not in have:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([*have, line]) + "\n")


def _in_progress(study: Path, runs: list[dict[str, str]], recipe: Recipe) -> list[str]:
    """A line naming the started, unfinished runs and their epochs (empty when there are none)."""
    import json

    done = {r["run"] for r in runs}
    left = []
    for spec in sorted(study.glob("*/spec.json")):
        if spec.parent.name not in done:
            try:
                epoch = json.loads((spec.parent / "progress.json").read_text()).get("epoch", 0)
            except (OSError, ValueError):
                epoch = 0
            left.append(f"{spec.parent.name} {epoch}/{recipe.epochs}")
    return [f"Unfinished (epochs done): {', '.join(left)}.", ""] if left else []


def _number(text: str) -> Any:
    """A ledger cell as a float when it is a decimal number (so tables round it), else unchanged."""
    return float(text) if re.fullmatch(r"-?\d+\.\d*(e-?\d+)?", str(text)) else text


def _pm(mean: float | None, std: float | None) -> str | None:
    if mean is None:
        return None
    return f"{100 * mean:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")


def run_accuracy_benchmark(
    configs: Iterable[str] | None = None,
    seeds: Iterable[int | str] = (0, 1, 2),
    recipe: Recipe | None = None,
    launch: Launch | None = None,
    parts: str | Iterable[str] = PARTS,
    study_dir: str | Path | None = None,
    out_dir: str | Path = "benchmarks",
    name: str | None = None,
    timing: Timing | None = None,
    restore: str | Path | None = None,
    pack: str | Path | None = None,
    pack_mb: float = 20.0,
    command: str = "",
) -> list[dict[str, Any]]:
    """Run parts of an accuracy study (see the module docstring); every part can be re-run, and skips what is done.

    Args:
        configs: ``configs=`` words (aliases such as ``plain``, ``local``, ``a2c2f-ultralytics``); None for all.
        seeds: Seeds, each config trained once per seed.
        recipe: The shared schedule; None: :class:`Recipe` defaults on the synthetic shapes dataset.
        launch: Device, concurrency and time budget; None: one run at a time, no budget.
        parts: ``train``, ``latency``, ``report`` (a comma-separated string or a list; ``all``).
        study_dir: Study folder; None: ``runs/<name>``.
        out_dir: Folder of the report files.
        name: File stem of the report; None: ``accuracy-<dataset>``.
        timing: Latency settings of ``part=latency``.
        restore: Folder with ``state.tar.*`` parts to restore into the study first (missing or empty: nothing).
        pack: Folder to write the study's ``state.tar.*`` parts into at the end.
        pack_mb: Largest pack in MiB (unfinished runs' checkpoints beyond it are left out).
        command: Command line recorded in the report.

    Returns:
        The report's per-config summary when ``report`` ran, else the ledger rows added or cost rows measured.

    Raises:
        StudyError: Bad arguments (unknown config, bad seeds, jobs < 1, unknown part) or a recipe that differs
            from the study folder's.

    Examples:
        >>> run_accuracy_benchmark(["plain", "local"], [0], Recipe(data, epochs=1, imgsz=64))  # doctest: +SKIP
    """
    from ..workflows import resolve_data

    todo = parse_parts(parts)
    chosen = resolve_configs(configs)
    seed_list = parse_seeds(seeds)
    recipe = recipe or Recipe(resolve_data(None))
    launch = launch or Launch()
    timing = timing or Timing()
    name = name or f"accuracy-{dataset_name(recipe.data)}"
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise StudyError(f"name={name!r}: use letters, digits, '.', '_' and '-' only")
    study = Path(study_dir) if study_dir is not None else Path("runs") / name
    if restore is not None:
        n = unpack_state(restore, study)
        print(f"bench accuracy: restored {n} file(s) into {study}", flush=True)
    pin_recipe(study, recipe)  # every part reads and reports the study with the recipe it was trained with
    result: list[dict[str, Any]] = []
    if "train" in todo:
        _record_command(study, command)
        result = run_study(study, chosen, seed_list, recipe, launch)
    if "latency" in todo:
        result = measure_costs(study, chosen, recipe.data, timing, recipe.imgsz)
    if "report" in todo:
        result = write_report(study, chosen, recipe, out_dir, name, command)
    if pack is not None and (study / "study.yaml").is_file():
        parts_written = pack_state(study, pack, max_mb=pack_mb)
        print(f"bench accuracy: packed the study into {len(parts_written)} part(s) in {pack}", flush=True)
    return result
