"""One run of an accuracy study in its own process: ``python -m yolo_attn.bench.trainrun RUN_DIR [options]``.

The worker reads ``RUN_DIR/spec.json`` (written by :mod:`yolo_attn.bench.scheduler`), then trains with
:class:`yolo_attn.YOLO` into ``RUN_DIR`` (ultralytics' ``save_dir``), or resumes with ultralytics' ``resume`` from
``RUN_DIR/weights/last.pt`` when an earlier launch left one. ultralytics saves ``last.pt`` after every epoch, so a
run stopped at any point loses at most the epoch in progress; a resumed run continues the same schedule (learning
rate, mosaic closing, EMA, optimizer state), statistically equivalent to an uninterrupted one, not bit-identical.

Before each epoch the worker checks whether the epoch can end before ``--deadline`` (the slowest of its last 3
epochs and last 3 start-to-start cycles, times 1.15, or ``--epoch-hint`` before it has one) and whether
``--epochs-per-launch`` are done; if not, it stops with exit status 3 (paused) and the next launch resumes. After
each epoch it records the epoch's wall time in ``progress.json``; at the end it writes ``result.json`` with the
final epoch's validation metrics (read from ultralytics' ``results.csv``: the last epoch's EMA model, not the best
epoch, so no epoch is selected on val).

A worker holds an exclusive lock on ``RUN_DIR/.lock`` while it runs (a second worker on the same run exits with
status 4), and pauses at the next epoch start when the process that launched it is gone.

Exit status: 0 finished, 3 paused, 4 run busy in another process, other values failed (log: ``RUN_DIR/train.log``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["EXIT_BUSY", "EXIT_DONE", "EXIT_PAUSED", "final_metrics", "main", "pause_reason", "train_run"]

EXIT_DONE, EXIT_PAUSED, EXIT_BUSY = 0, 3, 4
SAFETY = 1.15  # predicted epoch time = slowest of the last 3 epochs x SAFETY
RESUME_ARGS = ("data", "device", "workers", "cache")  # what a resume may change (machine-specific)
METRICS = {"map50_95": "metrics/mAP50-95(B)", "map50": "metrics/mAP50(B)",
           "precision": "metrics/precision(B)", "recall": "metrics/recall(B)"}


class _Pause(Exception):
    """Raised from an epoch-start callback to stop training between epochs (last.pt is complete then)."""


def _read_json(path: Path, default: dict) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def final_metrics(results_csv: Path, epochs: int) -> dict[str, float] | None:
    """Validation metrics of the final epoch from ultralytics' ``results.csv``; None unless all epochs are there.

    Args:
        results_csv: The run's ``results.csv``.
        epochs: The schedule's epoch count.

    Returns:
        ``{"map50_95", "map50", "precision", "recall"}`` or None.

    Examples:
        >>> final_metrics(Path("runs/s/yolov5n-s0/results.csv"), 60)["map50_95"]  # doctest: +SKIP
        0.312
    """
    if not results_csv.is_file():
        return None
    with results_csv.open(newline="") as f:
        rows = [{k.strip(): v.strip() for k, v in r.items() if k} for r in csv.DictReader(f)]
    final = [r for r in rows if r.get("epoch", "").isdigit() and int(r["epoch"]) == epochs]
    if not final:
        return None
    return {k: float(final[-1][col]) for k, col in METRICS.items()}


def pause_reason(
    now: float,
    deadline: float | None,
    recent: list[float],
    hint: float | None,
    trained: int,
    epochs_per_launch: int | None,
) -> str | None:
    """Why the worker should stop before the next epoch, or None to train it.

    Args:
        now: Current ``time.time()``.
        deadline: Time by which the process must have stopped (None: no limit).
        recent: Wall seconds of this run's recent epochs (the slowest of them counts).
        hint: Expected seconds per epoch when ``recent`` is empty (None: unknown, then the epoch is trained).
        trained: Epochs trained by this process so far.
        epochs_per_launch: Most epochs per process (None: no limit).

    Returns:
        A reason, or None.

    Examples:
        >>> pause_reason(100.0, 130.0, [20.0, 28.0], None, 2, None)
        'the next epoch (~28 s) would end after the launch deadline'
    """
    if epochs_per_launch is not None and trained >= epochs_per_launch:
        return f"epochs_per_launch={epochs_per_launch} reached"
    expected = max(recent) if recent else hint
    if deadline is not None and expected and now + SAFETY * expected > deadline:
        return f"the next epoch (~{expected:.0f} s) would end after the launch deadline"
    return None


def _checkpoint_state(last: Path, log: list[str]) -> tuple[Any, int | None]:
    """(loaded YOLO or None, epochs completed according to last.pt); an unreadable last.pt is removed."""
    from ..integration import YOLO

    if not last.is_file():
        return None, None
    try:
        yolo = YOLO(str(last))
    except Exception as e:  # noqa: BLE001  (a checkpoint cut short by a hard kill)
        log.append(f"last.pt unreadable ({type(e).__name__}: {e}); restarting this run from scratch")
        return None, None
    ckpt = yolo.ckpt or {}
    if ckpt.get("epoch", -1) < 0 or ckpt.get("optimizer") is None:
        return yolo, -1  # stripped: ultralytics finished this run
    return yolo, int(ckpt["epoch"]) + 1


def _lock(run: Path) -> Any:
    """An open file holding an exclusive lock on ``run/.lock`` (released when the process ends), or None if taken."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover  (not POSIX: no protection against a second worker)
        return True
    f = (run / ".lock").open("a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    return f


def _start_fresh(run: Path) -> None:
    shutil.rmtree(run / "weights", ignore_errors=True)
    for name in ("results.csv", "progress.json", "result.json"):
        (run / name).unlink(missing_ok=True)


def train_run(
    run_dir: str | Path,
    deadline: float | None = None,
    epochs_per_launch: int | None = None,
    launch: int = 1,
    epoch_hint: float | None = None,
) -> int:
    """Train or resume one run of a study (what the worker process does).

    Args:
        run_dir: The run folder holding ``spec.json``.
        deadline: Wall-clock time (``time.time()``) by which the process must have stopped; None for no limit.
        epochs_per_launch: Stop (paused) after this many epochs in this process; None for no limit.
        launch: Launch number recorded with each epoch in ``progress.json``.
        epoch_hint: Expected seconds per epoch before this run has measured its own.

    Returns:
        :data:`EXIT_DONE` or :data:`EXIT_PAUSED`.

    Examples:
        >>> train_run("runs/accuracy-shapes/yolov5n-local-s0", epochs_per_launch=1)  # doctest: +SKIP
        3
    """
    from ..integration import YOLO

    t_start = time.time()
    run = Path(run_dir).resolve()
    lock = _lock(run)
    if lock is None:
        print(f"yolo-attn trainrun: {run.name} is being trained by another process; not started", flush=True)
        return EXIT_BUSY
    parent = os.getppid()
    spec = json.loads((run / "spec.json").read_text())
    epochs = int(spec["train"]["epochs"])
    notes: list[str] = []
    yolo, done = _checkpoint_state(run / "weights" / "last.pt", notes)
    for n in notes:
        print(f"yolo-attn trainrun: {n}", flush=True)
    if done == -1 or (done is not None and done >= epochs):  # trained; only result.json is missing
        metrics = final_metrics(run / "results.csv", epochs)
        if metrics is not None:
            return _finish(run, metrics, spec, yolo)
        done, yolo = None, None
    if done is None:
        _start_fresh(run)
        yolo = YOLO(spec["model"])
    progress = _read_json(run / "progress.json", {"epoch": 0, "epochs": [], "starts": []})
    progress["starts"].append({"launch": launch, "resumed_from": done or 0})
    state: dict[str, Any] = {"t0": None, "t_prev": None, "cycles": [], "trained": 0, "started": False}

    def before_epoch(trainer: Any) -> None:
        now = time.time()
        if not state["started"]:
            state["started"] = True
            progress["starts"][-1]["startup_s"] = round(now - t_start, 2)
            group = trainer.optimizer.param_groups[0]
            progress["optimizer"] = f"{type(trainer.optimizer).__name__} lr0={group.get('initial_lr', group['lr']):.4g}"
        if state["t_prev"] is not None:  # start to start: the epoch plus what ultralytics does between epochs
            state["cycles"].append(now - state["t_prev"])
        recent = [e["s"] for e in progress["epochs"][-3:]] + state["cycles"][-3:]
        reason = pause_reason(now, deadline, recent, epoch_hint, state["trained"], epochs_per_launch)
        if os.getppid() != parent:
            reason = "the process that launched this run is gone"
        if reason:
            raise _Pause(reason)
        state["t0"] = state["t_prev"] = now

    def after_epoch(trainer: Any) -> None:
        if state["t0"] is None:  # final_eval calls this hook again after training
            return
        progress["epochs"].append({"epoch": trainer.epoch + 1, "s": round(time.time() - state["t0"], 3),
                                   "launch": launch})
        progress["epoch"] = trainer.epoch + 1
        state["t0"] = None
        state["trained"] += 1
        _write_json(run / "progress.json", progress)

    yolo.add_callback("on_train_epoch_start", before_epoch)
    yolo.add_callback("on_fit_epoch_end", after_epoch)
    launch_args = {k: spec[k] for k in ("device", "workers", "cache") if spec.get(k) is not None}
    args = {**spec["train"], **launch_args, "save_dir": str(run), "exist_ok": True}
    if done:
        args = {k: v for k, v in args.items() if k in RESUME_ARGS or k == "save_dir"}
        args["resume"] = True
    _write_json(run / "progress.json", progress)
    try:
        yolo.train(**args)
    except _Pause as e:
        _write_json(run / "progress.json", progress)
        print(f"yolo-attn trainrun: paused after epoch {progress['epoch']}/{epochs}: {e}", flush=True)
        return EXIT_PAUSED
    metrics = final_metrics(run / "results.csv", epochs)
    if metrics is None:
        raise RuntimeError(f"{run.name}: training returned but results.csv has no row for epoch {epochs}")
    return _finish(run, metrics, spec, yolo)


def _finish(run: Path, metrics: dict[str, float], spec: dict, yolo: Any) -> int:
    import torch

    trainer = getattr(yolo, "trainer", None)
    device = getattr(trainer, "device", None)
    if device is not None and device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device is not None:
        name = device.type
    else:
        name = str(spec.get("device") or "")
    import platform

    import ultralytics

    software = f"python {platform.python_version()}, torch {torch.__version__}, ultralytics {ultralytics.__version__}"
    _write_json(run / "result.json", {**metrics, "epochs": int(spec["train"]["epochs"]), "device": name,
                                       "software": software, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    print(f"yolo-attn trainrun: {run.name} finished: mAP50-95 {metrics['map50_95']:.4f}", flush=True)
    return EXIT_DONE


def main(argv: list[str] | None = None) -> int:
    """Command-line entry of the worker (see the module docstring).

    Args:
        argv: Arguments without the program name.

    Returns:
        Exit status.

    Examples:
        >>> main(["runs/s/yolov5n-s0", "--epochs-per-launch", "1"])  # doctest: +SKIP
        3
    """
    p = argparse.ArgumentParser(prog="python -m yolo_attn.bench.trainrun", description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--deadline", type=float, default=0.0, help="time.time() by which to stop (0: none)")
    p.add_argument("--epochs-per-launch", type=int, default=0, help="stop after this many epochs (0: no limit)")
    p.add_argument("--launch", type=int, default=1)
    p.add_argument("--epoch-hint", type=float, default=0.0, help="expected seconds per epoch (0: unknown)")
    a = p.parse_args(argv)
    return train_run(a.run_dir, a.deadline or None, a.epochs_per_launch or None, a.launch, a.epoch_hint or None)


if __name__ == "__main__":
    import yolo_attn  # noqa: F401  (registers the blocks before any checkpoint is unpickled)

    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # do not wait on dataloader workers or helper threads: the state is on disk
