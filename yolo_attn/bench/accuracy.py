"""``yolo-attn bench accuracy``: a fair, resumable study of accuracy against cost, in parts.

- ``train``: every (config, seed) trained with one recipe (:class:`~yolo_attn.bench.study.Recipe`), ``jobs`` at a
  time on one device, resumable, within a time budget (:func:`yolo_attn.bench.scheduler.run_study`); one ledger row
  per finished run in ``<runs>/runs.csv``.
- ``latency``: parameters, GFLOPs at 640 (attention matmuls included) and CPU latency of every config, timed
  interleaved (:mod:`yolo_attn.bench.study_costs`), into ``<runs>/cost.csv``. Separate from training so that a GPU
  launch spends nothing on it and the latencies come from an otherwise idle CPU machine.
- ``report``: ``<out>/<name>.csv``, ``.md``, ``.png`` (:mod:`yolo_attn.bench.study_report`).

``restore=DIR`` / ``pack=DIR`` move a study between machines (:mod:`yolo_attn.bench.state`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .scheduler import Launch, run_study
from .state import pack_state, unpack_state
from .study import Recipe, StudyError, dataset_name, parse_seeds, pin_recipe, resolve_configs
from .study_costs import Timing, measure_costs
from .study_report import record_command, write_report

__all__ = ["PARTS", "Launch", "Recipe", "Timing", "parse_parts", "run_accuracy_benchmark"]

PARTS = ("train", "latency", "report")


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
        record_command(study, command)
        result = run_study(study, chosen, seed_list, recipe, launch)
    if "latency" in todo:
        result = measure_costs(study, chosen, recipe.data, timing, recipe.imgsz)
    if "report" in todo:
        result = write_report(study, chosen, recipe, out_dir, name, command)
    if pack is not None and (study / "study.yaml").is_file():
        parts_written = pack_state(study, pack, max_mb=pack_mb)
        print(f"bench accuracy: packed the study into {len(parts_written)} part(s) in {pack}", flush=True)
    return result
