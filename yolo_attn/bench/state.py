"""Move a study folder between machines: pack it into parts small enough to transfer, restore it elsewhere.

:func:`pack_state` writes the folder minus everything that can be rebuilt (best.pt, finished runs' weights) as one
tar stream cut into ``state.tar.000``, ``.001``, ... of at most ``part_mb`` MiB; unfinished runs' ``last.pt`` go in,
most advanced first, with their optimizer state in bfloat16 (:func:`compact_checkpoint`), while the total stays
under ``max_mb``. :func:`unpack_state` restores the parts into a study
folder of any path without overwriting a file that is there (it is as new or newer) and merges the ledgers row by
row, so restoring on the machine the study still lives on changes nothing.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path

from .study import StudyError, append_ledger, read_ledger, run_key

__all__ = ["compact_checkpoint", "pack_state", "read_parts", "unpack_state", "write_pack", "write_parts"]

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
    parts, dropped = write_pack({str(p.relative_to(study.parent)): p for p in small},
                                [(str(w.relative_to(study.parent)), w) for w in weights], dest, "state.tar", max_mb,
                                part_mb)
    for name, mib in dropped:
        print(f"bench accuracy: pack: {Path(name).parts[-3]} left out ({mib:.1f} MiB would pass max_mb={max_mb}); it "
              "restarts from scratch after a restore")
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
    study = Path(study_dir)
    written = 0
    for rel, content in read_parts(src, "state.tar"):
        if len(rel) < 2:
            raise StudyError(f"restore: unexpected member {'/'.join(rel)!r} in state.tar.000 (not inside a study)")
        target = study.joinpath(*rel[1:])
        if rel[1:] == ("runs.csv",) and target.is_file():
            written += _merge_ledger(study, content)
            continue
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        written += 1
    return written


def compact_checkpoint(last: Path, dest: Path) -> Path:
    """Write an unfinished run's ``last.pt`` to ``dest`` with its optimizer's float32 state in bfloat16.

    AdamW's two moment buffers are 4/5 of a YOLOv5n ``last.pt`` as ultralytics writes it (24.3 MiB; 14.7 MiB after
    this). Resuming is unchanged but for the rounding (8 significant bits, float32's range, so no squared gradient
    underflows as it would in float16): ``Optimizer.load_state_dict`` casts the state back to the parameters' dtype.
    A file that is not such a checkpoint (a finished run's, one cut short by a kill) is copied as it is.

    Args:
        last: The checkpoint.
        dest: Where to write the compact copy.

    Returns:
        ``dest``.

    Examples:
        >>> compact_checkpoint(Path("runs/s/yolov5n-s0/weights/last.pt"), Path("0.pt")).stat().st_size  # doctest: +SKIP
        15400960
    """
    import torch

    try:
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        states = ckpt["optimizer"]["state"].values()
    except Exception:  # noqa: BLE001 - not a resumable checkpoint (e.g. cut short by a kill): sent as it is
        shutil.copyfile(last, dest)
        return dest
    for state in states:
        for k, v in state.items():
            if k != "step" and torch.is_tensor(v) and v.dtype == torch.float32:
                state[k] = v.to(torch.bfloat16)
    torch.save(ckpt, dest)
    return dest


def write_pack(
    files: dict[str, Path],
    checkpoints: list[tuple[str, Path]],
    dest: str | Path,
    stem: str,
    max_mb: float,
    part_mb: float = 15.0,
) -> tuple[list[Path], list[tuple[str, float]]]:
    """:func:`write_parts` of ``files`` plus, in the order given, each checkpoint (:func:`compact_checkpoint`) that
    still fits under ``max_mb`` in all (1 MiB kept for the tar headers).

    Args:
        files: Name in the stream -> file; always written.
        checkpoints: (name in the stream, checkpoint), most wanted first.
        dest: Folder for the parts.
        stem: Part name without its number.
        max_mb: Largest total in MiB.
        part_mb: Largest part in MiB.

    Returns:
        The part paths, and (name, MiB) of every checkpoint left out.

    Examples:
        >>> parts, left_out = write_pack({}, [("a/last.pt", Path("a/last.pt"))], "out", "ft.tar", 20)  # doctest: +SKIP
    """
    members = dict(files)
    budget = max_mb * 2**20 - sum(p.stat().st_size for p in files.values()) - 2**20
    dropped = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, ckpt) in enumerate(checkpoints):
            sent = compact_checkpoint(ckpt, Path(tmp) / f"{i}.pt")
            size = sent.stat().st_size
            if size <= budget:
                members[name] = sent
                budget -= size
            else:
                dropped.append((name, size / 2**20))
        return write_parts(members, dest, stem, part_mb), dropped


def write_parts(members: Mapping[str, Path], dest: str | Path, stem: str, part_mb: float = 15.0) -> list[Path]:
    """Write files as one tar stream cut into ``<dest>/<stem>.000``, ``.001``, ...

    Earlier ``<stem>.*`` parts in ``dest`` are replaced; ``dest`` is created.

    Args:
        members: Name in the stream (a relative path) -> file to write under that name.
        dest: Folder for the parts.
        stem: Part name without its number (``state.tar``).
        part_mb: Largest part in MiB (device file transfers cap single files at 16 MiB).

    Returns:
        The part paths, in order (one, possibly empty, when there are no files).

    Examples:
        >>> parts = write_parts({"a/result.json": Path("ft/a/result.json")}, "out", "ft.tar")  # doctest: +SKIP
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, p in members.items():
            tar.add(p, arcname=name)
    data = buf.getvalue()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob(f"{stem}.*"):
        old.unlink()
    step = int(part_mb * 2**20)
    parts = []
    for i in range(0, max(len(data), 1), step):
        part = dest / f"{stem}.{i // step:03d}"
        part.write_bytes(data[i:i + step])
        parts.append(part)
    return parts


def read_parts(src: str | Path, stem: str) -> list[tuple[tuple[str, ...], bytes]]:
    """The files packed by :func:`write_parts` as (relative path parts, content); none when ``src`` has no parts.

    Raises:
        StudyError: On a member with an absolute path, ``..`` or that is not a regular file (nothing is written).

    Examples:
        >>> [rel for rel, _ in read_parts("out", "finetune.tar")]  # doctest: +SKIP
        [('finetune_runs', 'yolov5n-seed0', 'result.json')]
    """
    parts = sorted(Path(src).glob(f"{stem}.[0-9][0-9][0-9]"))
    if not parts:
        return []
    members = []
    with tarfile.open(fileobj=io.BytesIO(b"".join(p.read_bytes() for p in parts)), mode="r") as tar:
        for m in tar.getmembers():
            rel = Path(m.name)
            if rel.is_absolute() or ".." in rel.parts or not m.isfile():
                raise StudyError(f"restore: unsafe or unexpected member {m.name!r} in {parts[0].name}")
            members.append((rel.parts, tar.extractfile(m).read()))
    return members


def _merge_ledger(study: Path, content: bytes) -> int:
    have = {(r["config"], r["seed"]) for r in read_ledger(study)}
    added = 0
    for r in csv.DictReader(io.StringIO(content.decode())):
        if (r.get("config"), r.get("seed")) not in have:
            append_ledger(study, r)
            added += 1
    return added
