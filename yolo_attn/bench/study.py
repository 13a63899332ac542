"""The state of an accuracy study: its configs, its pinned recipe, its ledger of finished runs, and a portable pack.

A study lives in one folder (``runs/accuracy-<dataset>`` by default)::

    study.yaml             the recipe every run shares (dataset, epochs, imgsz, batch, ...), pinned at the first launch
    runs.csv               the ledger: one row appended per finished (config, seed) run; a re-launch skips these
    cost.csv               params, GFLOPs at 640 and interleaved CPU latency per config (``part=latency``)
    commands.txt           the command line of every launch that trained (for the report)
    models/*.yaml          the peers (ultralytics' C3TR, A2C2f spliced into YOLOv5n) as YAML for the trainer
    <config>-s<seed>/      one ultralytics run folder per (config, seed): weights/last.pt, results.csv, plus
                           spec.json (what the worker trains), study.json (time accounting, written by the scheduler),
                           progress.json (epoch times, written by the worker), result.json (final metrics)

Moving a study folder between machines: :mod:`yolo_attn.bench.state`.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "LEDGER_COLUMNS",
    "Recipe",
    "StudyConfig",
    "StudyError",
    "available_configs",
    "dataset_name",
    "parse_seeds",
    "read_ledger",
    "append_ledger",
    "resolve_configs",
    "roles",
    "run_key",
    "pin_recipe",
]

#: Columns of the ledger, in order (one row per finished run).
LEDGER_COLUMNS = (
    "config", "seed", "map50_95", "map50", "precision", "recall", "epochs", "imgsz", "batch", "epoch_s",
    "wall_min", "gpu_min", "concurrency", "launches", "optimizer", "device", "software", "dataset", "run", "finished",
)
PLAIN = "yolov5n"
PEER_SUFFIX = "-ultralytics"


class StudyError(ValueError):
    """A bad study argument or an inconsistent study folder (one line naming the value and what is allowed)."""


@dataclass(frozen=True)
class StudyConfig:
    """One model of a study.

    Args:
        name: Row name, also the run-folder prefix (``yolov5n``, ``yolov5n-local``, ``yolov5n-A2C2f-ultralytics``).
        alias: Short name accepted by ``configs=`` (``plain``, ``local``, ``a2c2f-ultralytics``).
        role: ``plain``, ``attention`` (ours) or ``peer`` (ultralytics' blocks).
        model: A shipped config name (``yolov5n-local.yaml``) or a model dict (peers).

    Examples:
        >>> available_configs()["local"].name
        'yolov5n-local'
    """

    name: str
    alias: str
    role: str
    model: str | dict

    def model_file(self, study_dir: Path) -> str:
        """What the trainer builds from: the shipped config name, or the peer's YAML written into the study folder.

        Args:
            study_dir: The study folder (peers are written to ``<study_dir>/models/<name>.yaml``).

        Returns:
            A config name or path for :class:`yolo_attn.YOLO`.
        """
        if isinstance(self.model, str):
            return self.model
        path = Path(study_dir) / "models" / f"{self.name}.yaml"
        text = yaml.safe_dump({k: v for k, v in self.model.items() if k != "yaml_file"}, sort_keys=False)
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return str(path)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")


def available_configs() -> dict[str, StudyConfig]:
    """Every config a study can train, by alias: plain YOLOv5n, each shipped attention config, the two peers (scale n).

    Returns:
        ``{alias: StudyConfig}``, plain first, then the shipped configs by name, then the peers.

    Examples:
        >>> list(available_configs())[:2]
        ['plain', 'area']
    """
    from ..integration import CONFIG_DIR
    from .peers import peer_configs

    out = {"plain": StudyConfig(PLAIN, "plain", "plain", f"{PLAIN}.yaml")}
    for path in sorted(Path(CONFIG_DIR).glob("yolov5-*.yaml")):
        kind = path.stem.split("-", 1)[1]
        out[kind] = StudyConfig(f"yolov5n-{kind}", kind, "attention", f"yolov5n-{kind}.yaml")
    for label, model in peer_configs("n").items():
        name = _slug(label)  # "yolov5n-C3TR (ultralytics)" -> "yolov5n-C3TR-ultralytics"
        alias = name.split("-", 1)[1].lower()
        out[alias] = StudyConfig(name, alias, "peer", model)
    return out


def resolve_configs(names: Iterable[str] | None) -> list[StudyConfig]:
    """Turn ``configs=`` words into study configs (aliases, row names and file names all accepted, any case).

    Args:
        names: ``["plain", "local", "yolov5n-window.yaml", "a2c2f-ultralytics"]``; None or empty for every config.

    Returns:
        The configs in the given order, duplicates removed.

    Raises:
        StudyError: For a name that is not a study config (the message lists the allowed aliases).

    Examples:
        >>> [c.name for c in resolve_configs(["plain", "yolov5n-local.yaml"])]
        ['yolov5n', 'yolov5n-local']
    """
    avail = available_configs()
    names = [str(n).strip() for n in (names or []) if str(n).strip()]
    if not names:
        return list(avail.values())
    lookup = {}
    for c in avail.values():
        for key in (c.alias, c.name, f"{c.name}.yaml"):
            lookup[key.lower()] = c
    out: dict[str, StudyConfig] = {}
    for n in names:
        c = lookup.get(n.lower())
        if c is None:
            raise StudyError(f"configs: unknown config {n!r}; allowed: {', '.join(avail)} "
                             "(or their full names, e.g. yolov5n-local.yaml)")
        out.setdefault(c.name, c)
    return list(out.values())


def parse_seeds(seeds: Iterable[Any]) -> list[int]:
    """Check seeds: at least one, each a non-negative int, no repeats.

    Args:
        seeds: Seed values (ints or digit strings).

    Returns:
        The seeds as ints, in the given order.

    Raises:
        StudyError: On an empty list, a non-integer, a negative value or a repeat.

    Examples:
        >>> parse_seeds(["0", 1, "2"])
        [0, 1, 2]
    """
    out = []
    for s in seeds:
        try:
            v = int(str(s).strip())
        except ValueError:
            raise StudyError(f"seeds: {s!r} is not an integer; give e.g. seeds=0,1,2") from None
        if v < 0:
            raise StudyError(f"seeds: {v} is negative; give non-negative integers, e.g. seeds=0,1,2")
        if v in out:
            raise StudyError(f"seeds: {v} is given twice; give distinct seeds, e.g. seeds=0,1,2")
        out.append(v)
    if not out:
        raise StudyError("seeds: none given; give e.g. seeds=0,1,2")
    return out


def dataset_name(data: str | Path) -> str:
    """Short name of a dataset: its YAML's stem, or the folder name for a generic ``data.yaml``.

    Examples:
        >>> dataset_name("shared/data/highway-320/data.yaml")
        'highway-320'
    """
    p = Path(str(data))
    return p.parent.name if p.stem.lower() in {"data", "dataset"} and p.parent.name else p.stem


@dataclass(frozen=True)
class Recipe:
    """What every run of a study shares; pinned in ``study.yaml`` so later launches cannot change it.

    Everything not listed is ultralytics' default (optimizer ``auto``, lr, augmentation, ``close_mosaic=10``, AMP on
    CUDA). Early stopping is off (``patience=0``) so every run trains the full schedule.

    Args:
        data: Data YAML (resolved local path; only its :func:`dataset_name` is pinned).
        epochs: Epochs per run.
        imgsz: Train and validation image size.
        batch: Batch size.
        val: Validate after every epoch (learning curves); False validates only the final epoch (saves GPU time).

    Examples:
        >>> Recipe("d/highway-320/data.yaml", epochs=60).pinned()["dataset"]
        'highway-320'
    """

    data: str
    epochs: int = 60
    imgsz: int = 320
    batch: int = 16
    val: bool = False

    def __post_init__(self) -> None:
        for key in ("epochs", "imgsz", "batch"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise StudyError(f"{key}={v!r} must be a positive integer")

    def pinned(self) -> dict[str, Any]:
        """The fields a study folder pins (the data path may differ between machines, its name may not)."""
        d = asdict(self)
        d["dataset"] = dataset_name(d.pop("data"))
        return {"dataset": d.pop("dataset"), **d, "patience": 0, "deterministic": True}

    def train_args(self, seed: int) -> dict[str, Any]:
        """ultralytics ``train`` arguments of one run (without device, workers, cache and folders)."""
        return {"data": self.data, "epochs": self.epochs, "imgsz": self.imgsz, "batch": self.batch, "val": self.val,
                "seed": seed, "deterministic": True, "patience": 0, "plots": False}


def pin_recipe(study_dir: Path, recipe: Recipe) -> None:
    """Write ``study.yaml`` at the first launch; later, check that the recipe is the same.

    Args:
        study_dir: The study folder.
        recipe: This launch's recipe.

    Raises:
        StudyError: When the folder was started with another recipe (nothing is changed then).

    Examples:
        >>> pin_recipe(Path("runs/accuracy-shapes"), Recipe("data/shapes.yaml"))  # doctest: +SKIP
    """
    path = Path(study_dir) / "study.yaml"
    want = recipe.pinned()
    if path.is_file():
        have = yaml.safe_load(path.read_text()) or {}
        diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
        if diff:
            what = ", ".join(f"{k}={new!r} (study has {old!r})" for k, (old, new) in diff.items())
            raise StudyError(f"runs={study_dir.name}: this study was started with another recipe: {what}; "
                             "use the same values or another runs= folder")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(want, sort_keys=False))


def run_key(config: str, seed: int) -> str:
    """Run-folder name of one (config, seed): ``yolov5n-local-s0``.

    Examples:
        >>> run_key("yolov5n-local", 2)
        'yolov5n-local-s2'
    """
    return f"{config}-s{seed}"


# ------------------------------------------------------------------------------------------------------------ ledger
def read_ledger(study_dir: str | Path) -> list[dict[str, str]]:
    """Rows of ``runs.csv`` (finished runs) as strings; empty when there is none; a repeated run keeps its first row.

    Examples:
        >>> [r["config"] for r in read_ledger("runs/accuracy-shapes")]  # doctest: +SKIP
        ['yolov5n', 'yolov5n-local']
    """
    path = Path(study_dir) / "runs.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    seen, out = set(), []
    for r in rows:
        key = (r.get("config"), r.get("seed"))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def append_ledger(study_dir: str | Path, row: Mapping[str, Any]) -> None:
    """Append one finished run to ``runs.csv`` (header written with the first row), flushed at once.

    Args:
        study_dir: The study folder.
        row: Values for :data:`LEDGER_COLUMNS` (others are ignored, missing ones left empty).

    Examples:
        >>> append_ledger("runs/accuracy-shapes", {"config": "yolov5n", "seed": 0, "map50_95": 0.3})  # doctest: +SKIP
    """
    path = Path(study_dir) / "runs.csv"
    new = not path.is_file() or path.stat().st_size == 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LEDGER_COLUMNS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow({k: "" if row.get(k) is None else row.get(k) for k in LEDGER_COLUMNS})


def roles(names: Sequence[str]) -> dict[str, str]:
    """Role of each row name (``plain``, ``peer`` or ``attention``), also for names no longer shipped.

    Examples:
        >>> roles(["yolov5n", "yolov5n-local", "yolov5n-A2C2f-ultralytics"])
        {'yolov5n': 'plain', 'yolov5n-local': 'attention', 'yolov5n-A2C2f-ultralytics': 'peer'}
    """
    return {n: "plain" if n == PLAIN else "peer" if n.endswith(PEER_SUFFIX) else "attention" for n in names}
