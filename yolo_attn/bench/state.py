"""Move a study folder between machines: pack it into parts small enough to transfer, restore it elsewhere.

:func:`pack_state` writes the folder minus everything that can be rebuilt (best.pt, finished runs' weights) as one
tar stream cut into ``state.tar.000``, ``.001``, ... of at most ``part_mb`` MiB; unfinished runs' ``last.pt`` go in,
most advanced first, while the total stays under ``max_mb``. :func:`unpack_state` restores the parts into a study
folder of any path without overwriting a file that is there (it is as new or newer) and merges the ledgers row by
row, so restoring on the machine the study still lives on changes nothing.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

from .study import StudyError, append_ledger, read_ledger, run_key

__all__ = ["pack_state", "unpack_state"]

_SMALL_RUN_FILES = ("spec.json", "study.json", "progress.json", "result.json", "results.csv", "args.yaml")


def _state_files(study: Path) -> tuple[list[Path], list[Path]]:
    """(small files, last.pt of unfinished runs ordered most-advanced first), relative to the study's parent."""
    done = {run_key(r["config"], int(r["seed"])) for r in read_ledger(study) if r.get("seed", "").isdigit()}
    small = [study / f for f in ("study.yaml", "runs.csv", "cost.csv", "commands.txt") if (study / f).is_file()]
    small += sorted((study / "models").glob("*.yaml"))
    weights = []
    for run in sorted(p for p in study.iterdir() if (p / "spec.json").is_file()):
        small += [run / f for f in _SMALL_RUN_FILES if (run / f).is_file()]
        last = run / "weights" / "last.pt"
        if run.name not in done and last.is_file():
            weights.append((_epochs_done(run), last))
    weights.sort(key=lambda t: -t[0])
    return small, [w for _, w in weights]


def _epochs_done(run: Path) -> int:
    try:
        return int(json.loads((run / "progress.json").read_text()).get("epoch", 0))
    except (OSError, ValueError):
        return 0


def pack_state(study_dir: str | Path, dest: str | Path, part_mb: float = 15.0, max_mb: float = 20.0) -> list[Path]:
    """Write what a later launch needs to continue the study as ``<dest>/state.tar.000``, ``.001``, ...

    Kept: study.yaml, the ledger, cost.csv, peer YAMLs, every run's small files, and ``weights/last.pt`` of the
    unfinished runs (most advanced first) while the total stays under ``max_mb``; a run whose checkpoint does not fit
    is listed in the returned warning and restarts from scratch after a restore. Finished runs' weights and best.pt
    are left out (the ledger holds their results).

    Args:
        study_dir: The study folder.
        dest: Folder for the parts (created; earlier ``state.tar.*`` parts there are replaced).
        part_mb: Largest part in MiB (device file transfers cap single files at 16 MiB).
        max_mb: Largest total in MiB.

    Returns:
        The part paths, in order.

    Examples:
        >>> parts = pack_state("runs/accuracy-highway-320", "out")  # doctest: +SKIP
    """
    study, dest = Path(study_dir), Path(dest)
    if not (study / "study.yaml").is_file():
        raise StudyError(f"pack: {study.name} is not a study folder (no study.yaml)")
    small, weights = _state_files(study)
    budget = max_mb * 2**20 - sum(p.stat().st_size for p in small) - 2**20
    kept, dropped = [], []
    for w in weights:
        size = w.stat().st_size
        (kept if size <= budget else dropped).append(w)
        budget -= size if size <= budget else 0
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for p in [*small, *kept]:
            tar.add(p, arcname=str(p.relative_to(study.parent)))
    data = buf.getvalue()
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("state.tar.*"):
        old.unlink()
    step = int(part_mb * 2**20)
    parts = []
    for i in range(0, max(len(data), 1), step):
        part = dest / f"state.tar.{i // step:03d}"
        part.write_bytes(data[i:i + step])
        parts.append(part)
    for w in dropped:
        print(f"bench accuracy: pack: {w.parent.parent.name} left out ({w.stat().st_size / 2**20:.1f} MiB would pass "
              f"max_mb={max_mb}); it restarts from scratch after a restore")
    return parts


def unpack_state(src: str | Path, study_dir: str | Path) -> int:
    """Restore a study packed by :func:`pack_state` into ``study_dir`` (which may have another path or name).

    Files already there are kept (they are as new or newer); the ledgers are merged row by row. Members with absolute
    paths or ``..`` are refused.

    Args:
        src: Folder holding ``state.tar.000``, ... (nothing there: nothing to do).
        study_dir: The study folder to restore into.

    Returns:
        Number of files written.

    Examples:
        >>> unpack_state("state_parts", "runs/accuracy-highway")  # doctest: +SKIP
        7
    """
    parts = sorted(Path(src).glob("state.tar.[0-9][0-9][0-9]"))
    if not parts:
        return 0
    study = Path(study_dir)
    data = b"".join(p.read_bytes() for p in parts)
    written = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        for m in tar.getmembers():
            rel = Path(m.name)
            if rel.is_absolute() or ".." in rel.parts or len(rel.parts) < 2 or not m.isfile():
                raise StudyError(f"restore: unsafe or unexpected member {m.name!r} in {parts[0].name}")
            target = study.joinpath(*rel.parts[1:])
            content = tar.extractfile(m).read()
            if rel.parts[1:] == ("runs.csv",) and target.is_file():
                written += _merge_ledger(study, content)
                continue
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            written += 1
    return written


def _merge_ledger(study: Path, content: bytes) -> int:
    have = {(r["config"], r["seed"]) for r in read_ledger(study)}
    added = 0
    for r in csv.DictReader(io.StringIO(content.decode())):
        if (r.get("config"), r.get("seed")) not in have:
            append_ledger(study, r)
            added += 1
    return added
