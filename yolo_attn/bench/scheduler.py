"""Run the trainings of a study as concurrent worker processes on one device, within a time budget.

A small detector at 320 px leaves most of a large GPU idle, so :func:`run_study` keeps ``jobs`` worker processes
(:mod:`yolo_attn.bench.trainrun`) training at once on the same device, each with its own dataloader workers and
``cache=ram``. Unfinished runs (a ``last.pt`` from an earlier launch) are resumed first, then new runs are started
seed by seed (every config gets seed 0 before any gets seed 1, so a partial study is balanced).

Time budget: with ``time_budget=M`` minutes, workers are told a deadline of ``M`` minutes minus a reserve for the
report; each pauses between epochs when its next epoch would end after it (``last.pt`` is complete then), no new run
is started when a start plus one epoch no longer fits, and a worker still running ``GRACE_S`` after the deadline is
killed (it resumes from its previous ``last.pt``). Every finished run is appended to the ledger at once.

Accounting: each run's wall seconds, and its GPU seconds = wall time x the share of the device it held (1 / number
of runs training at that moment), summed over launches in ``study.json``; the ledger reports them in minutes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .study import Recipe, StudyConfig, StudyError, append_ledger, pin_recipe, read_ledger, run_key
from .trainrun import EXIT_BUSY, EXIT_DONE, EXIT_PAUSED, SAFETY

__all__ = ["GRACE_S", "Launch", "run_study", "start_fits"]

GRACE_S = 20.0  # a worker still alive this long after the deadline is killed
POLL_S = 0.5
SAVE_EVERY_S = 15.0  # accounting is written to study.json this often while runs train


@dataclass(frozen=True)
class Launch:
    """How one launch of a study uses the machine (may change between launches; the recipe may not).

    Args:
        device: Training device for every run (``"0"``, ``"cpu"``; None: ultralytics' choice).
        jobs: Runs training at once on that device.
        workers: Dataloader workers per run; None: ``max(2, cpu_count // jobs)`` (ultralytics uses 0 on CPU).
        cache: ultralytics ``cache`` (``"ram"``: decoded images kept in memory per run).
        time_budget: Minutes this launch may take, report included; None: until every run is done.
        epochs_per_launch: Pause every run after this many epochs in this launch; None: no limit.

    Examples:
        >>> Launch(jobs=6, time_budget=8).jobs
        6
    """

    device: str | None = None
    jobs: int = 1
    workers: int | None = None
    cache: str | bool = "ram"
    time_budget: float | None = None
    epochs_per_launch: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1:
            raise StudyError(f"jobs={self.jobs!r} must be an integer >= 1 (runs training at once)")
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 0):
            raise StudyError(f"workers={self.workers!r} must be an integer >= 0")
        if self.time_budget is not None and (isinstance(self.time_budget, bool)
                                             or not isinstance(self.time_budget, (int, float))
                                             or not self.time_budget > 0):
            raise StudyError(f"time_budget={self.time_budget!r} must be a number of minutes > 0")
        if self.epochs_per_launch is not None and (not isinstance(self.epochs_per_launch, int)
                                                   or self.epochs_per_launch < 1):
            raise StudyError(f"epochs_per_launch={self.epochs_per_launch!r} must be an integer >= 1")

    def workers_per_run(self) -> int:
        """Dataloader workers of each run."""
        return self.workers if self.workers is not None else max(2, (os.cpu_count() or 2) // self.jobs)


@dataclass
class _Run:
    config: StudyConfig
    seed: int
    dir: Path
    account: dict = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    started: float = 0.0

    @property
    def key(self) -> str:
        return self.dir.name


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _say(msg: str) -> None:
    print(f"bench accuracy: {msg}", flush=True)


def _estimates(study: Path) -> tuple[float | None, float | None]:
    """(seconds per epoch, seconds of start-up) measured so far in this study: the slowest run's median."""
    epoch, startup = [], []
    for p in study.glob("*/progress.json"):
        prog = _read_json(p, {})
        secs = [e["s"] for e in prog.get("epochs", [])]
        if secs:
            epoch.append(statistics.median(secs))
        startup += [s["startup_s"] for s in prog.get("starts", []) if "startup_s" in s]
    return (max(epoch) if epoch else None), (max(startup) if startup else None)


def start_fits(now: float, deadline: float | None, epoch_s: float | None, startup_s: float | None) -> bool:
    """Whether a run started now can train at least one epoch before the deadline (unknown costs: yes).

    Examples:
        >>> start_fits(0.0, 90.0, epoch_s=60.0, startup_s=30.0)
        False
    """
    return deadline is None or not epoch_s or now + (startup_s or 0.0) + SAFETY * epoch_s < deadline


def _child_env(jobs: int) -> dict[str, str]:
    import yolo_attn

    env = dict(os.environ)
    root = str(Path(yolo_attn.__file__).resolve().parents[1])  # the workers run the same code as this process
    env["PYTHONPATH"] = os.pathsep.join([root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("YOLO_OFFLINE", "1")
    env.setdefault("YOLO_AUTOINSTALL", "0")
    return env


def _warm_label_cache(data: str) -> None:
    """Let one process write ultralytics' label caches before several workers would race to write the same file."""
    from ultralytics.data import YOLODataset

    from ..integration import check_dataset_local

    d = check_dataset_local(data)
    for split in ("train", "val"):
        if d.get(split):
            try:
                YOLODataset(img_path=d[split], data=d, task="detect", imgsz=64, augment=False, cache=False)
            except Exception as e:  # noqa: BLE001  (the workers report dataset errors themselves)
                _say(f"label cache for {split} not prepared ({type(e).__name__}); the runs scan labels themselves")


def _row(run: _Run, recipe: Recipe, jobs: int) -> dict[str, Any]:
    res = _read_json(run.dir / "result.json", {})
    prog = _read_json(run.dir / "progress.json", {})
    secs = [e["s"] for e in prog.get("epochs", [])]
    wall, gpu = run.account.get("wall_s", 0.0), run.account.get("gpu_s", 0.0)
    return {
        "config": run.config.name, "seed": run.seed,
        **{k: res.get(k) for k in ("map50_95", "map50", "precision", "recall")},
        "epochs": res.get("epochs"), "imgsz": recipe.imgsz, "batch": recipe.batch,
        "epoch_s": round(statistics.median(secs), 3) if secs else None,
        "wall_min": round(wall / 60, 3), "gpu_min": round(gpu / 60, 3),
        "concurrency": round(wall / gpu, 2) if gpu else None, "launches": run.account.get("launches", 0),
        "optimizer": prog.get("optimizer"),
        "device": res.get("device"), "software": res.get("software"), "dataset": recipe.pinned()["dataset"],
        "run": run.key,
        "finished": res.get("finished"),
    }


def _spec(run: _Run, study: Path, recipe: Recipe, launch: Launch) -> dict[str, Any]:
    return {"config": run.config.name, "seed": run.seed, "model": run.config.model_file(study),
            "train": recipe.train_args(run.seed), "device": launch.device,
            "workers": launch.workers_per_run(), "cache": launch.cache}


def _stop(run: _Run, sig: int) -> None:
    try:
        os.killpg(run.proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_study(
    study_dir: str | Path,
    configs: list[StudyConfig],
    seeds: list[int],
    recipe: Recipe,
    launch: Launch,
) -> list[dict[str, Any]]:
    """Train every (config, seed) not yet in the ledger, ``launch.jobs`` at a time, within ``launch.time_budget``.

    Args:
        study_dir: The study folder (created; its recipe is pinned at the first launch).
        configs: Configs to train.
        seeds: Seeds to train each config with.
        recipe: The shared schedule.
        launch: Device, concurrency and time budget of this launch.

    Returns:
        The ledger rows appended in this launch.

    Raises:
        StudyError: When the folder was started with another recipe.

    Examples:
        >>> rows = run_study("runs/s", resolve_configs(["plain"]), [0], Recipe("d.yaml"), Launch())  # doctest: +SKIP
    """
    t0 = time.time()
    study = Path(study_dir).resolve()
    pin_recipe(study, recipe)
    done = {(r["config"], r["seed"]) for r in read_ledger(study)}
    runs = [_Run(c, s, study / run_key(c.name, s)) for s in seeds for c in configs if (c.name, str(s)) not in done]
    runs.sort(key=lambda r: not (r.dir / "weights" / "last.pt").is_file())  # unfinished runs first (stable)
    added: list[dict[str, Any]] = []
    for r in list(runs):  # finished in an earlier launch that ended before writing the ledger
        r.account = _read_json(r.dir / "study.json", {})
        if (r.dir / "result.json").is_file():
            added.append(_row(r, recipe, launch.jobs))
            append_ledger(study, added[-1])
            runs.remove(r)
    _say(f"{len(done) + len(added)} run(s) done, {len(runs)} to train in {study.name} "
         f"({launch.jobs} at a time{f', budget {launch.time_budget:g} min' if launch.time_budget else ''})")
    if not runs:
        return added
    budget_s = launch.time_budget * 60 if launch.time_budget else None
    deadline = t0 + budget_s - min(45.0, 0.1 * budget_s) if budget_s else None
    if launch.jobs > 1 and any(not (r.dir / "weights" / "last.pt").is_file() for r in runs):
        _warm_label_cache(recipe.data)  # ultralytics writes labels/*.cache next to the data, as any training does
    env = _child_env(launch.jobs)
    pending, active = list(runs), []
    last_tick = last_save = time.time()
    try:
        while pending or active:
            now = time.time()
            if active:
                share = (now - last_tick) / len(active)
                for r in active:
                    r.account["wall_s"] = r.account.get("wall_s", 0.0) + (now - last_tick)
                    r.account["gpu_s"] = r.account.get("gpu_s", 0.0) + share
            last_tick = now
            for r in [r for r in active if r.proc.poll() is not None]:
                active.remove(r)
                added += _reap(r, study, recipe, launch)
            if deadline and now > deadline + GRACE_S:
                for r in active:
                    _say(f"{r.key}: still running {GRACE_S:.0f} s after the deadline; stopped "
                         "(resumes from its last completed epoch)")
                    _stop(r, signal.SIGTERM)
            epoch_est, startup_est = _estimates(study)
            fits = start_fits(now, deadline, epoch_est, startup_est)
            while pending and len(active) < launch.jobs and fits:
                r = pending.pop(0)
                _start(r, study, recipe, launch, deadline, epoch_est, env)
                active.append(r)
            if not fits and pending:
                _say(f"{len(pending)} run(s) not started: a start plus one epoch no longer fits the time budget")
                pending.clear()
            if now - last_save > SAVE_EVERY_S:
                for r in active:
                    _write_json(r.dir / "study.json", r.account)
                last_save = now
            if deadline and active and now > deadline + GRACE_S + 10:
                for r in active:
                    _stop(r, signal.SIGKILL)
            time.sleep(POLL_S if active else 0)
    except BaseException:
        for r in active:
            _stop(r, signal.SIGTERM)
            _write_json(r.dir / "study.json", r.account)
        raise
    exits = [_read_json(r.dir / "study.json", {}).get("last_exit") for r in runs if r.proc is not None]
    ledger = {(r["config"], r["seed"]) for r in read_ledger(study)}
    n_done = sum((c.name, str(s)) in ledger for s in seeds for c in configs)
    _say(f"launch over after {(time.time() - t0) / 60:.1f} min: {len(added)} run(s) finished, "
         f"{exits.count(EXIT_PAUSED)} paused, {sum(e not in (EXIT_DONE, EXIT_PAUSED) for e in exits)} failed or "
         f"busy, {sum(r.proc is None for r in runs)} not started; {n_done} of {len(configs) * len(seeds)} done")
    return added


def _start(r: _Run, study: Path, recipe: Recipe, launch: Launch, deadline: float | None,
           epoch_est: float | None, env: dict[str, str]) -> None:
    r.dir.mkdir(parents=True, exist_ok=True)
    r.account = _read_json(r.dir / "study.json", {})
    r.account["launches"] = r.account.get("launches", 0) + 1
    r.account["jobs"] = launch.jobs
    _write_json(r.dir / "spec.json", _spec(r, study, recipe, launch))
    _write_json(r.dir / "study.json", r.account)
    cmd = [sys.executable, "-m", "yolo_attn.bench.trainrun", str(r.dir), "--launch", str(r.account["launches"])]
    if deadline:
        cmd += ["--deadline", f"{deadline:.3f}"]
    if launch.epochs_per_launch:
        cmd += ["--epochs-per-launch", str(launch.epochs_per_launch)]
    if epoch_est:
        cmd += ["--epoch-hint", f"{epoch_est:.3f}"]
    log = (r.dir / "train.log").open("a")
    log.write(f"\n=== launch {r.account['launches']} {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n")
    log.flush()
    # own process group (a hard stop reaches its dataloader workers), same session (dies with the launch)
    group = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
    r.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, **group)
    log.close()
    resumed = (r.dir / "weights" / "last.pt").is_file()
    _say(f"{r.key}: {'resumed' if resumed else 'started'} (launch {r.account['launches']})")


def _reap(r: _Run, study: Path, recipe: Recipe, launch: Launch) -> list[dict[str, Any]]:
    code = r.proc.returncode
    r.account["last_exit"] = code
    _write_json(r.dir / "study.json", r.account)
    epoch = _read_json(r.dir / "progress.json", {}).get("epoch", 0)
    if code == EXIT_DONE and (r.dir / "result.json").is_file():
        row = _row(r, recipe, launch.jobs)
        append_ledger(study, row)
        _say(f"{r.key}: done, mAP50-95 {row['map50_95']:.4f}, {row['wall_min']:.1f} wall-min, "
             f"{row['gpu_min']:.1f} GPU-min")
        return [row]
    if code == EXIT_PAUSED:
        _say(f"{r.key}: paused after epoch {epoch}/{recipe.epochs} (resumes next launch)")
    elif code == EXIT_BUSY:
        _say(f"{r.key}: still trained by a process of an earlier launch; left to it")
    else:
        tail = ""
        log = r.dir / "train.log"
        if log.is_file():
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            errors = [ln for ln in lines if re.match(r"[\w.]*(Error|Exception)\b", ln)]
            tail = (errors or lines or [""])[-1][:200]
        _say(f"{r.key}: stopped with exit status {code} after epoch {epoch}/{recipe.epochs}: {tail} "
             f"(log: {r.key}/train.log; the next launch retries it)")
    return []
