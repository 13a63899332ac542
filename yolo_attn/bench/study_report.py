"""The report of an accuracy study: ``<out>/<name>.csv`` (one row per run, costs joined), ``.md`` and ``.png``.

The markdown names the machine and versions (of this machine and, per run, of the training machine), the command
lines, the dataset and the recipe, then gives mean ± std per config, the comparison with plain YOLOv5n against two
standard errors, the interpretation and goal check of :mod:`yolo_attn.bench.verdict`, and the runs. The PNG plots
mean mAP50-95 against CPU latency with error bars = std over seeds (against GFLOPs while latency is not measured).
No absolute path is written: command arguments that are absolute paths are shortened.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import report, verdict
from .study import LEDGER_COLUMNS, Recipe, StudyConfig, read_ledger, resolve_configs, roles
from .study_costs import count_costs, read_costs

__all__ = ["record_command", "write_report"]


def record_command(study: Path, command: str) -> None:
    """Add this launch's command line (absolute paths shortened) to ``commands.txt`` unless it is there already.

    Examples:
        >>> record_command(Path("runs/s"), "yolo-attn bench accuracy jobs=6")  # doctest: +SKIP
    """
    if not command:
        return
    path = study / "commands.txt"
    have = path.read_text().splitlines() if path.is_file() else []
    line = report.portable_command(command)
    if line not in have:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([*have, line]) + "\n")


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

    Examples:
        >>> rows = write_report("runs/s", resolve_configs(["plain"]), Recipe("d.yaml"), "out", "acc")  # doctest: +SKIP
    """
    study, out = Path(study_dir), Path(out_dir)
    runs = read_ledger(study)
    names = list(dict.fromkeys([c.name for c in configs] + [r["config"] for r in runs]))
    costs = read_costs(study)
    known = {**{c.name: c for c in resolve_configs(None)}, **{c.name: c for c in configs}}
    missing = [known[n] for n in names if n in known and n not in costs and any(r["config"] == n for r in runs)]
    if missing:  # exact counts are cheap; latency needs part=latency
        costs.update(count_costs(missing, recipe.data))
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
    notes = report.header_notes(command) + [
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
