"""``yolo-attn bench finetune``: fine-tune plain YOLOv5 and attention configs from the same pretrained YOLOv5.

1. The pretrained model: a given checkpoint of the stock YOLOv5 layout (``pretrained=...pt``), or a plain
   ``yolov5n.yaml`` trained here on the same data for ``pretrain_epochs`` (the recorded run
   ``<out>/finetune_runs/pretrain-<config>``).
2. For every config and seed: load the pretrained weights (:meth:`yolo_attn.YOLO.load`: every stock tensor transfers
   and the attention starts as a no-op) and validate (mAP50-95 at step 0, which must equal the pretrained model's),
   then fine-tune with the same schedule (``pretrained=``) and read the final validation mAP50-95.
3. Write ``finetune.csv`` (one row per run), ``finetune.md`` (machine, versions, command, dataset, schedule; mean and
   standard deviation over seeds per config, the difference to plain fine-tuning paired by seed with its 95%
   interval, how far the attention has been switched on (``attn_gain``, :func:`~yolo_attn.blocks.mean_gain`), and
   every run) and ``finetune.png``.

Resumable: each finished run leaves ``result.json`` in its run directory and is skipped next time; an interrupted
training resumes from its ``last.pt``. For machines that lend a device in capped launches: ``time_budget`` (minutes)
stops between epochs before it runs out (``last.pt`` is complete then) and starts no fine-tune that the slowest one
finished so far says would not fit; ``pack=DIR`` writes what the next launch needs (every run's small files, the
pretrained checkpoint, unfinished runs' ``last.pt`` while under ``pack_mb``) as ``finetune.tar.NNN`` parts and
``restore=DIR`` puts them back, never overwriting a file (:func:`yolo_attn.bench.state.write_pack`).

A run records the fingerprint of its config's layers (``config_fingerprint``); a run folder whose config has
changed since is refused in one line instead of being reused or overwritten. Reports name files relative to the
output directory, never absolute paths.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import statistics
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from ..configs import unscaled
from . import report
from .state import read_parts, write_pack
from .study import StudyError
from .trainrun import pause_reason

__all__ = ["DEFAULT_CONFIGS", "FinetuneError", "config_fingerprint", "finetune_once", "goal_lines", "pack_runs",
           "pretrain", "restore_runs", "run_finetune_benchmark", "summarize"]

#: Plain YOLOv5n first (the reference), then three attention configs.
DEFAULT_CONFIGS = ("yolov5n.yaml", "yolov5n-local.yaml", "yolov5n-c3tr.yaml", "yolov5n-window.yaml")
MAP = "metrics/mAP50-95(B)"
PACK = "finetune.tar"  # parts: finetune.tar.000, .001, ...
REPORT_RESERVE_S = 30.0  # of time_budget, kept for the report and the pack


class FinetuneError(ValueError):
    """A request the benchmark cannot carry out (arguments, nothing finished to report), in one line."""


class _OutOfTime(Exception):
    """The launch's time budget would run out in the next epoch or run (raised between epochs: last.pt is complete)."""


def _shown(path: str | Path, root: Path | None = None) -> str:
    """A path for reports: relative to ``root`` when inside it, else its last two parts (never absolute)."""
    p = Path(str(path))
    if root is not None:
        try:
            return str(p.resolve().relative_to(root.resolve()))
        except ValueError:
            pass
    return str(Path(*p.parts[-2:]))


def _done(run: Path) -> dict | None:
    f = run / "result.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _resumable(last: Path) -> bool:
    """Whether an interrupted run's ``last.pt`` still holds its optimizer (a finished run's has been stripped)."""
    import torch

    try:
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - an unreadable file is simply not resumable; the run starts again
        return False
    return isinstance(ckpt, dict) and ckpt.get("optimizer") is not None and ckpt.get("epoch", -1) >= 0


def _epoch_seconds(run: Path) -> list[float]:
    """Seconds of each epoch in ``results.csv`` (differences of its ``time`` column, which restarts on a resume)."""
    try:
        with (run / "results.csv").open(newline="") as f:
            times = [float(v) for r in csv.DictReader(f) for k, v in r.items() if k and k.strip() == "time" and v]
    except (OSError, ValueError):
        return []
    return [b - a if b >= a else b for a, b in zip([0.0, *times], times)]


def _stop_before_late_epochs(yolo: Any, run: Path, deadline: float) -> None:
    """Raise :class:`_OutOfTime` at an epoch start when the epoch would end after ``deadline`` (the slowest of the
    last epochs, :func:`~yolo_attn.bench.trainrun.pause_reason`); a resumed run starts from its recorded epochs."""
    seen = {"prev": None, "cycles": _epoch_seconds(run)[-3:]}

    def before_epoch(trainer: Any) -> None:
        now = time.time()
        if seen["prev"] is not None:
            seen["cycles"].append(now - seen["prev"])
        seen["prev"] = now
        reason = pause_reason(now, deadline, seen["cycles"][-3:], None, 0, None)
        if reason:
            raise _OutOfTime(f"{run.name}: {reason}")

    yolo.add_callback("on_train_epoch_start", before_epoch)


def _train(yolo_cfg: str | Path, run: Path, deadline: float | None = None, **train_args: Any) -> Any:
    """Train into ``run``: resume an interrupted run from its ``last.pt``, else start (again) from ``yolo_cfg``.

    A resume may come from another machine (``restore=``): data, device, workers and the run folder are this
    machine's. With a ``deadline``, training stops between epochs (:class:`_OutOfTime`) before passing it.
    """
    from ..integration import YOLO

    last = run / "weights" / "last.pt"
    resume = last.is_file() and _resumable(last)
    yolo = YOLO(str(last if resume else yolo_cfg))
    if deadline is not None:
        _stop_before_late_epochs(yolo, run, deadline)
    if resume:
        here = {k: train_args[k] for k in ("data", "device", "workers") if k in train_args}
        yolo.train(resume=True, save_dir=str(run), **here)
    else:
        yolo.train(project=str(run.parent), name=run.name, exist_ok=True, plots=False, verbose=False, **train_args)
    return yolo


def _checkpoint_gain(run: Path) -> float | None:
    """:func:`~yolo_attn.blocks.mean_gain` of a finished run's ``best.pt`` (runs recorded before the gain was), else
    None."""
    import torch

    from ..blocks import mean_gain

    best = run / "weights" / "best.pt"
    if not best.is_file():
        return None
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    return mean_gain(ckpt.get("ema") or ckpt["model"])


def _final_map(yolo: Any) -> float:
    metrics = getattr(yolo.trainer, "metrics", None) or {}
    return float(metrics.get(MAP, float("nan")))


def pretrain(cfg: str, data: str, runs: Path, epochs: int, deadline: float | None = None, **train_args: Any) -> Path:
    """Train the plain "pretrained" model from scratch (skipped when its run has finished before).

    Args:
        cfg: Plain config (``yolov5n.yaml``).
        data: Data YAML.
        runs: Directory of the benchmark's runs.
        epochs: Epochs.
        deadline: ``time.time()`` by which training must have stopped (between epochs; None: no limit).
        **train_args: ``imgsz``, ``batch``, ``device``, ``seed``, ... for ``train``.

    Returns:
        Path of the pretrained checkpoint (``best.pt``).
    """
    run = runs / f"pretrain-{Path(cfg).stem}"
    if not _done(run):
        yolo = _train(cfg, run, deadline, data=data, epochs=epochs, **train_args)
        best = Path(yolo.trainer.best if Path(yolo.trainer.best).is_file() else yolo.trainer.last)
        (run / "result.json").write_text(json.dumps({"weights": str(best.relative_to(run)), "map50_95": _final_map(yolo),
                                                     "epochs": epochs}))
    return run / _done(run)["weights"]


def _model_dict(cfg: str, drop: tuple[str, ...] = ("yaml_file", "scale")) -> dict:
    """The config's model dict as ultralytics reads it (scale from the file name), without the keys in ``drop``."""
    from ultralytics.nn.tasks import yaml_model_load

    from ..integration import resolve_config

    return {k: v for k, v in yaml_model_load(str(resolve_config(cfg))).items() if k not in drop}


def config_fingerprint(cfg: str) -> str:
    """Short hash of a config's layers, scales and scale (not its ``nc``): changes when the config's computation does.

    Examples:
        >>> config_fingerprint("yolov5n-local.yaml") == config_fingerprint("yolov5s-local.yaml")
        False
    """
    d = _model_dict(cfg, drop=("yaml_file", "nc"))
    return hashlib.sha256(yaml.safe_dump(d, sort_keys=True).encode()).hexdigest()[:12]


def _check_same_config(run: Path, cfg: str, fingerprint: str) -> None:
    """Refuse a run folder made with another version of ``cfg`` (its results would describe other layers)."""
    f = run / "config_fingerprint"
    recorded = f.read_text().strip() if f.is_file() else fingerprint
    if recorded != fingerprint:
        raise FinetuneError(
            f"run folder {_shown(run, run.parent.parent)} was made with another {Path(cfg).name} (config fingerprint "
            f"{recorded}, now {fingerprint}): move or delete that folder, or pass another out="
        )


def _config_with_nc(cfg: str, nc: int, where: Path) -> Path:
    """A copy of ``cfg`` with ``nc`` set, for validating at step 0; returns the scaled name to build it by.

    The file is written under the unscaled name (``yolov5-local.yaml``) and built as ``yolov5n-local.yaml``: the
    scale comes from the name, as for the shipped configs.
    """
    d = _model_dict(cfg)
    d["nc"] = nc
    where.mkdir(parents=True, exist_ok=True)
    scaled = where / Path(cfg).name
    unscaled(scaled).write_text(yaml.safe_dump(d, sort_keys=False))
    return scaled


def finetune_once(cfg: str, pretrained: Path, data: str, nc: int, runs: Path, epochs: int,
                  deadline: float | None = None, **train_args: Any) -> dict:
    """Step-0 validation and a fine-tune of one config and seed from the pretrained checkpoint (skipped when done
    before). The run directory is ``<runs>/<config>-seed<seed>``.

    Args:
        cfg: Config name (``yolov5n-local.yaml``).
        pretrained: Pretrained checkpoint (stock YOLOv5 layout).
        data: Data YAML.
        nc: Number of classes of ``data``.
        runs: Directory of the benchmark's runs.
        epochs: Fine-tuning epochs.
        deadline: ``time.time()`` by which training must have stopped (between epochs; None: no limit).
        **train_args: ``imgsz``, ``batch``, ``device``, ``seed``, ... (also used for validation where they apply).

    Returns:
        ``dict(config, seed, map50_95_step0, map50_95, transferred, stock_tensors, run, attn_gain)``, plus ``wall_s``
        (seconds from start to finish) when the run was not resumed.
    """
    from ..blocks import mean_gain
    from ..integration import YOLO

    seed = int(train_args.get("seed", 0))
    run = runs / f"{Path(cfg).stem}-seed{seed}"
    fingerprint = config_fingerprint(cfg)
    _check_same_config(run, cfg, fingerprint)
    done = _done(run)
    if done:
        return done
    t0 = time.time()
    run.mkdir(parents=True, exist_ok=True)
    (run / "config_fingerprint").write_text(fingerprint + "\n")
    val_args = {k: train_args[k] for k in ("imgsz", "batch", "device") if k in train_args}
    start = YOLO(str(_config_with_nc(cfg, nc, runs / "configs"))).load(str(pretrained))
    step0 = start.val(data=data, plots=False, project=str(runs), name=f"{run.name}-step0", exist_ok=True,
                      verbose=False, **val_args)
    tr = start.transfer_report
    yolo = _train(cfg, run, deadline, data=data, epochs=epochs, pretrained=str(pretrained), **train_args)
    result = {"config": Path(cfg).stem, "seed": seed, "map50_95_step0": float(step0.box.map),
              "map50_95": _final_map(yolo), "transferred": tr.transferred, "stock_tensors": tr.n_source,
              "run": run.name, "attn_gain": mean_gain(yolo.model)}
    if not yolo.trainer.resume:  # the whole run in this launch: what the next start may take (time_budget)
        result["wall_s"] = round(time.time() - t0, 1)
    (run / "result.json").write_text(json.dumps(result))
    return result


def _check_run_fits(finished: list[dict], deadline: float | None) -> None:
    """Raise :class:`_OutOfTime` when the slowest uninterrupted fine-tune so far would not end before ``deadline``."""
    took = [r["wall_s"] for r in finished if r.get("wall_s")]
    if deadline is not None and took and time.time() + max(took) > deadline:
        raise _OutOfTime(f"the next fine-tune (~{max(took):.0f} s, the slowest so far) would end after the deadline")


def pack_runs(out_dir: str | Path, dest: str | Path, pack_mb: float = 20.0) -> list[Path]:
    """Write what the next launch needs as ``<dest>/finetune.tar.000``, ... (see :func:`restore_runs`).

    Kept: every file of ``<out_dir>/finetune_runs`` except checkpoints; of the checkpoints, the finished pretraining's
    weights (or an unfinished one's ``last.pt``) first, then unfinished fine-tunes' ``last.pt``, most epochs first,
    while the total stays under ``pack_mb``. Unfinished runs' checkpoints travel with their optimizer state in
    bfloat16 (:func:`~yolo_attn.bench.state.compact_checkpoint`: a YOLOv5n ``last.pt`` with AdamW 24 -> 15 MiB).
    A checkpoint left out is named; its run starts again after a restore.

    Args:
        out_dir: The benchmark's output folder.
        dest: Folder for the parts (created; earlier ``finetune.tar.*`` parts there are replaced).
        pack_mb: Largest total in MiB.

    Returns:
        The part paths, in order.

    Examples:
        >>> parts = pack_runs(".ft", "out")  # doctest: +SKIP
    """
    out = Path(out_dir).resolve()
    runs = out / "finetune_runs"
    files = sorted(f for f in runs.rglob("*") if f.is_file() and f.suffix != ".pt" and f.name != ".lock")
    ckpts = []  # (pretraining first, most epochs first, path)
    for run in sorted(p for p in runs.glob("*") if p.is_dir()):
        done, last, pre = _done(run), run / "weights" / "last.pt", run.name.startswith("pretrain-")
        if pre and done:
            ckpts.append((0, 0, run / done["weights"]))
        elif not done and last.is_file() and _resumable(last):
            ckpts.append((0 if pre else 1, -len(_epoch_seconds(run)), last))
    ckpts.sort(key=lambda t: t[:2])
    parts, dropped = write_pack({str(f.relative_to(out)): f for f in files},
                                [(str(c.relative_to(out)), c) for *_, c in ckpts], dest, PACK, pack_mb)
    for name, mib in dropped:
        print(f"bench finetune: pack: {name} left out ({mib:.1f} MiB would pass pack_mb={pack_mb}); that run starts "
              "again after a restore", flush=True)
    return parts


def restore_runs(src: str | Path, out_dir: str | Path) -> int:
    """Put the files packed by :func:`pack_runs` into ``out_dir`` (another path or machine is fine); a file that is
    already there is kept. Returns the number of files written (0 when ``src`` holds no parts)."""
    out = Path(out_dir)
    written = 0
    try:
        members = read_parts(src, PACK)
    except StudyError as e:
        raise FinetuneError(str(e)) from None
    for rel, content in members:
        target = out.joinpath(*rel)
        if rel[0] != "finetune_runs" or target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        written += 1
    return written


def run_finetune_benchmark(
    data: str | Path,
    configs: Iterable[str] = DEFAULT_CONFIGS,
    pretrained: str | Path | None = None,
    pretrain_epochs: int = 15,
    epochs: int = 5,
    imgsz: int = 256,
    batch: int = 16,
    device: str | None = "cpu",
    seeds: Iterable[int] = (0,),
    workers: int | None = None,
    out_dir: str | Path = "benchmarks",
    command: str = "",
    train: bool = True,
    time_budget: float | None = None,
    restore: str | Path | None = None,
    pack: str | Path | None = None,
    pack_mb: float = 20.0,
) -> list[dict]:
    """Fine-tune every config from one pretrained plain YOLOv5 with one schedule; write ``finetune.{csv,md,png}``.

    Args:
        data: Data YAML (its images must be on disk; nothing is copied).
        configs: Scaled config names; the first is the reference (plain ``yolov5n.yaml``).
        pretrained: A pretrained checkpoint of the stock layout; None to train ``configs[0]`` for
            ``pretrain_epochs`` first (recorded under ``<out_dir>/finetune_runs``).
        pretrain_epochs: Epochs of that pretraining.
        epochs: Fine-tuning epochs (the same for every config).
        imgsz: Training and validation image size.
        batch: Batch size.
        device: ``cpu``, ``0``, ...
        seeds: Training seeds (``deterministic=True``); every config is fine-tuned once per seed.
        workers: Dataloader workers (None: ultralytics' default).
        out_dir: Output directory.
        command: Command line recorded in the markdown header.
        train: False to write the report from the runs that have finished (``part=report``), training nothing.
        time_budget: Minutes this call may take, report and pack included (None: until every run is done). Training
            stops between epochs before it would pass the budget, and no fine-tune is started that the slowest
            uninterrupted one so far says would not finish; the report then covers the runs finished so far.
        restore: Folder with ``finetune.tar.*`` parts of an earlier launch to put into ``out_dir`` first (existing
            files are kept; no parts: nothing to do).
        pack: Folder to write this launch's ``finetune.tar.*`` parts into at the end (for the next launch's
            ``restore``).
        pack_mb: Largest pack in MiB: the pretrained checkpoint first, then unfinished runs' ``last.pt`` (most epochs
            first) while they fit; one that does not fit restarts after a restore.

    Returns:
        One row per finished run: ``config, seed, map50_95_step0, map50_95, delta, transferred, stock_tensors, run``.
    """
    from ..checks import check_labels
    from ..integration import check_dataset_local
    from ..transfer import check_checkpoint_path
    from ..workflows import resolve_data

    t_start = time.time()
    configs, seeds = list(configs), [int(x) for x in seeds]
    if not configs or not seeds or len(set(seeds)) != len(seeds):
        raise FinetuneError(f"configs={configs} and seeds={seeds} must be non-empty, seeds without repeats")
    for key, value in (("time_budget", time_budget), ("pack_mb", pack_mb)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            unit = "minutes" if key == "time_budget" else "MiB"
            raise FinetuneError(f"{key}={value!r} must be a number > 0 ({unit})")
    data = resolve_data(data)
    check_labels(data)
    nc = int(check_dataset_local(data)["nc"])
    out = Path(out_dir)
    runs = (out / "finetune_runs").resolve()
    deadline = None if time_budget is None else t_start + 60 * time_budget - REPORT_RESERVE_S
    args = {"imgsz": imgsz, "batch": batch, "device": device, "deterministic": True, "val": False,
            **({"workers": workers} if workers is not None else {})}
    plan = [(seed, cfg) for seed in seeds for cfg in configs]
    if pretrained is None and train and not re.fullmatch(r"yolov5[nslmx]", Path(configs[0]).stem):
        raise FinetuneError(f"configs[0]={configs[0]} would be trained as the pretrained model, which must be plain "
                         "YOLOv5 (yolov5n.yaml ...): put it first, or pass pretrained=<stock-layout checkpoint>")
    if restore is not None:
        print(f"bench finetune: restored {restore_runs(restore, out)} file(s) into {_shown(runs, out)}", flush=True)

    def finished() -> list[dict]:
        return [r for r in (_done(runs / f"{Path(c).stem}-seed{s}") for s, c in plan) if r]

    stopped = None
    try:
        if pretrained is None:
            pre = runs / f"pretrain-{Path(configs[0]).stem}"
            weights = pretrain(configs[0], data, runs, pretrain_epochs, deadline, seed=seeds[0], **args) if train \
                else pre / (_done(pre) or {}).get("weights", "weights/best.pt")
            where = f"{configs[0]} trained {pretrain_epochs} epochs on the same data (run {_shown(weights, out)})"
        else:
            weights = check_checkpoint_path(pretrained, "pretrained").resolve()
            where = f"{Path(str(pretrained)).name} (given)"
        if train:
            rows = []
            for seed, cfg in report.progress(plan, desc="bench finetune"):
                if not _done(runs / f"{Path(cfg).stem}-seed{seed}"):
                    _check_run_fits(finished(), deadline)
                rows.append(finetune_once(cfg, weights, data, nc, runs, epochs, deadline, seed=seed, **args))
    except _OutOfTime as e:
        stopped = str(e)
    finally:
        if pack is not None:
            parts = pack_runs(out, pack, pack_mb)
            print(f"bench finetune: packed {_shown(runs, out)} into {len(parts)} part(s) in {_shown(pack)}", flush=True)
    if stopped or not train:  # the report of the runs that have finished
        rows = finished()
        if stopped:
            print(f"bench finetune: stopped within time_budget={time_budget} min ({stopped}); {len(rows)} of "
                  f"{len(plan)} fine-tunes finished; run the same command again to go on", flush=True)
            if not rows:
                return []
        if not rows:
            raise FinetuneError(f"no finished fine-tuning run under {_shown(runs)} for configs={configs}, seeds={seeds}")
        seeds = sorted({r["seed"] for r in rows})
    for r in rows:
        r["delta"] = r["map50_95"] - r["map50_95_step0"]
        if "attn_gain" not in r:  # recorded before the gain was
            r["attn_gain"] = _checkpoint_gain(runs / r["run"])
        r["run"] = _shown(runs / r["run"], out)
    cols = ["config", "seed", "map50_95_step0", "map50_95", "delta", "attn_gain", "transferred", "stock_tensors", "run"]
    report.write_csv(rows, out / "finetune.csv", cols)
    summary = summarize(rows, configs)
    notes = [*report.header_notes(command), (
        f"Data {_shown(data)} ({nc} classes). Pretrained model: {where}. Every config loads it (all stock tensors "
        f"transfer; the attention starts as a no-op), is validated (step 0), then fine-tuned {epochs} epochs at imgsz "
        f"{imgsz}, batch {batch}, device {device}, seeds {', '.join(map(str, seeds))} (deterministic), and validated "
        "again (the final validation of the run). map50_95_step0 should be the same for every config. attn_gain: "
        "the mean absolute LayerScale gain of the attention branches after fine-tuning (0 at step 0, 1 where a "
        "from-scratch model starts), i.e. how far the fine-tune has switched the attention on."),
        *goal_lines(summary)]
    body = ["# Fine-tuning from a pretrained YOLOv5", "", *(line for note in notes for line in (note, "")),
            report.markdown_table(summary, SUMMARY_COLUMNS), "", "Every run:", "", report.markdown_table(rows, cols), ""]
    (out / "finetune.md").write_text("\n".join(body))
    report.plot_bars({r["config"]: {"step 0": r["map50_95_step0"], f"after {epochs} epochs (mean)": r["map50_95_mean"]}
                      for r in summary}, out / "finetune.png",
                     f"mAP50-95 before and after fine-tuning ({epochs} epochs, {_shown(data)})", "mAP50-95")
    return rows


SUMMARY_COLUMNS = ["config", "runs", "map50_95_step0", "map50_95_mean", "map50_95_std", "attn_gain_mean", "d_vs_plain",
                   "paired", "ci95", "goal"]


#: Two-sided 95% quantiles of Student's t by degrees of freedom (paired differences over n seeds: n - 1).
T95 = (12.71, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
       2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def _t95(df: int) -> float:
    return T95[df - 1] if df <= len(T95) else 2.0  # beyond 30: between 1.96 and 2.04


def summarize(rows: list[dict], configs: list[str]) -> list[dict]:
    """Per config: runs, step-0 mAP, mean and std over seeds, and the paired difference to plain (``configs[0]``).

    Runs with the same seed see the same batches and augmentations (ultralytics seeds the dataloader by ``seed``,
    independent of the model) and start from the same weights with the same predictions, so the difference to plain
    is taken per seed (``d_vs_plain``: mean of ``map50_95(config, seed) - map50_95(plain, seed)`` over the seeds both
    finished; ``ci95``: half-width of its 95% interval, Student's t with ``n - 1`` degrees of freedom times the
    standard error). ``goal`` (the issue's "scores at least what plain fine-tuning scores"): ``met`` when the mean
    difference is not negative, ``within noise`` when it is negative but the interval reaches 0, ``missed`` when the
    whole interval lies below 0; ``one seed`` when no interval can be formed.

    Examples:
        >>> rows = [{"config": c, "seed": s, "map50_95_step0": .1, "map50_95": m} for c, s, m in
        ...         [("p", 0, .20), ("p", 1, .22), ("p", 2, .21), ("a", 0, .19), ("a", 1, .22), ("a", 2, .205)]]
        >>> [(r["goal"], r["d_vs_plain"] and round(r["d_vs_plain"], 4)) for r in summarize(rows, ["p", "a"])]
        [('reference', None), ('within noise', -0.005)]
    """
    names = [Path(c).stem for c in configs]
    rows = sorted(rows, key=lambda r: (names.index(r["config"]) if r["config"] in names else len(names), r["seed"]))
    plain = {r["seed"]: r["map50_95"] for r in rows if r["config"] == names[0]}
    out = []
    for name in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == name]
        maps = [r["map50_95"] for r in mine]
        diffs = [r["map50_95"] - plain[r["seed"]] for r in mine if r["seed"] in plain] if name != names[0] else []
        d = statistics.fmean(diffs) if diffs else None
        ci = _t95(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
        goal = ("reference" if name == names[0] else "n/a" if d is None else "met" if d >= 0
                else "one seed" if ci is None else "within noise" if -d <= ci else "missed")
        gain = [r["attn_gain"] for r in mine if r.get("attn_gain") is not None]
        out.append({"config": name, "runs": len(mine), "map50_95_step0": mine[0]["map50_95_step0"],
                    "map50_95_mean": statistics.fmean(maps),
                    "map50_95_std": statistics.stdev(maps) if len(maps) > 1 else None,
                    "attn_gain_mean": statistics.fmean(gain) if gain else None,
                    "d_vs_plain": d, "paired": len(diffs) or None, "ci95": ci, "goal": goal})
    return out


def goal_lines(summary: list[dict]) -> list[str]:
    """Paragraphs of the report stating the issue's goal per attention config, from :func:`summarize`."""
    plain = summary[0] if summary else None
    if plain is None:
        return []
    step0 = {round(r["map50_95_step0"], 6) for r in summary}
    lines = [f"Goal, part 1 (every config scores the pretrained mAP at step 0): "
             f"{'met' if len(step0) == 1 else 'MISSED'} ({', '.join(f'{x:.4f}' for x in sorted(step0))})."]
    said = []
    for r in summary[1:]:
        d = "n/a" if r["d_vs_plain"] is None else f"{100 * r['d_vs_plain']:+.2f} points"
        ci = "" if r["ci95"] is None else f" +- {100 * r['ci95']:.2f} (95%, {r['paired']} seeds)"
        said.append(f"`{r['config']}` {d}{ci}: {r['goal']}")
    lines.append("Goal, part 2 (after the same fine-tune, at least plain's mAP50-95; difference to "
                 f"`{plain['config']}` paired by seed, mean and 95% interval): " + "; ".join(said) + ".")
    return lines
