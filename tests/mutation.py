"""Mutation check: plant known faults, one at a time, in a temporary copy of the repository and run the tests that
claim to rule each one out; every fault must make them fail.

A :class:`~mutation_faults.Fault` is ``(id, file, exact original snippet, replacement, test selection)``, listed in
``tests/mutation_faults.py``. Before anything is planted, every snippet must occur exactly once in its file; a
snippet that does not (the code moved on) is a *stale* fault and the run stops, naming it: re-target it there. The
working tree is never modified: the repository's files (tracked and untracked, not ignored) are copied to a
temporary directory, each fault is written into the copy, its tests run there (``pytest -x -q``, in a forked
process that inherits the preloaded third-party modules), and the file is restored.

Before the faults, each test selection runs once on the unmodified copy (grouped per test file) and must pass, so
that a failure under a fault is the fault's doing.

This module is dev tooling: it lives under ``tests/`` (not in the ``yolo_attn`` package) and is wrapped by
``scripts/mutate.py``. ``tests/test_mutation_table.py`` checks, cheaply, that the table parses and every snippet is
found.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from mutation_faults import FAULTS, Fault

REPO = Path(__file__).resolve().parents[1]
#: pytest flags of every run: stop at the first failure, quiet, no cache written into the copy, warnings silenced.
FLAGS = ["-x", "-q", "-p", "no:cacheprovider", "-W", "ignore"]


def pytest_args(fault: Fault) -> list[str]:
    """Arguments after ``python -m pytest`` that run the fault's selection."""
    return [*FLAGS, fault.select, *(["-k", fault.k] if fault.k else [])]




# --------------------------------------------------------------------------------------------------------- checking
def problems(faults: Sequence[Fault] = FAULTS, root: Path = REPO) -> list[str]:
    """Everything wrong with a fault table against the code in ``root`` (empty when it is usable).

    Args:
        faults: The fault table.
        root: Repository root to check against.

    Returns:
        One message per problem: duplicate ids, missing files, stale snippets (not found exactly once), no-op
        replacements, selections naming a missing test file.
    """
    out, seen = [], set()
    for f in faults:
        if f.id in seen:
            out.append(f"{f.id}: duplicate id")
        seen.add(f.id)
        path = root / f.file
        if not path.is_file():
            out.append(f"{f.id}: file {f.file} not found")
            continue
        count = path.read_text().count(f.original)
        if count != 1:
            out.append(f"{f.id}: stale: the snippet occurs {count} times in {f.file} (expected once): {f.original!r}")
        if f.replacement == f.original:
            out.append(f"{f.id}: the replacement equals the original")
        if not (root / f.select.split("::")[0]).is_file():
            out.append(f"{f.id}: test file {f.select.split('::')[0]} not found")
    return out


def copy_repo(repo: Path, dest: Path) -> Path:
    """Copy the repository's files (tracked and untracked, not ignored; symlinks kept) to ``dest``."""
    listing = subprocess.run(["git", "ls-files", "-z", "-c", "-o", "--exclude-standard"], cwd=repo, check=True,
                             capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, dict.fromkeys(listing)):
        src, dst = repo / rel, dest / rel
        if not (src.exists() or src.is_symlink()):
            continue  # deleted in the working tree
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)
    return dest


# ---------------------------------------------------------------------------------------------------------- running
@dataclass
class Outcome:
    """What one pytest run gave: exit status, wall seconds, pytest's summary line, output tail, CPU seconds.

    ``cpu`` counts the run and everything it started (user + system time of the reaped processes): unlike wall time
    it hardly depends on what else runs on the machine, so it estimates the wall time on an idle one.
    """

    rc: int
    seconds: float
    summary: str
    tail: str
    cpu: float = 0.0


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu() -> float:
    """User + system CPU seconds of this process's reaped child processes (and theirs), so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


#: Third-party modules imported once by the runner and inherited by every forked pytest run (saves their import
#: time per fault). Nothing of the project, and not ultralytics: it reads its settings from the environment that
#: the tests' conftest sets up at import.
PRELOAD = ("numpy", "torch", "torchvision", "cv2", "onnxruntime", "yaml", "matplotlib.pyplot", "pytest")


def preload() -> None:
    """Import :data:`PRELOAD` (those that are installed) in this process."""
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            continue


def run_pytest(root: Path, args: Sequence[str], timeout: float) -> Outcome:
    """``pytest *args`` in ``root`` with ``root`` first on the import path, in a forked child where the platform has
    ``fork`` (a fresh interpreter otherwise); the child and everything it starts are killed after ``timeout``."""
    start, cpu = time.monotonic(), children_cpu()
    with tempfile.TemporaryFile("w+") as log:
        if hasattr(os, "fork"):
            rc = _forked_pytest(root, args, timeout, log)
        else:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(root), os.environ.get("PYTHONPATH"))))}
            try:
                rc = subprocess.run([sys.executable, "-m", "pytest", *args], cwd=root, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                rc = -1
        log.seek(0)
        text = log.read()
    if rc == -1:
        text += f"\ntimeout after {timeout:.0f} s"
    return Outcome(rc, time.monotonic() - start, _summary(text), text[-3000:], children_cpu() - cpu)


def _forked_pytest(root: Path, args: Sequence[str], timeout: float, log) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child: own process group, output to the log, the copy first on every path
        rc = 3
        try:
            os.setpgid(0, 0)
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            os.chdir(root)
            own = {str(REPO), str(REPO / "tests"), str(REPO / "scripts"), ""}
            sys.path[:] = [str(root)] + [p for p in sys.path if p not in own]
            os.environ["PYTHONPATH"] = os.pathsep.join(
                [str(root)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in own])
            import pytest

            rc = int(pytest.main(list(args)))
        except BaseException:  # noqa: BLE001 - report anything, then leave without running the parent's cleanup
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 3
        if time.monotonic() > deadline:
            try:
                os.killpg(pid, 9)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            return -1
        time.sleep(0.1)


def _summary(text: str) -> str:
    """pytest's final counts line (``1 failed, 3 passed``), or the last output line."""
    lines = [line for line in text.splitlines() if re.search(r"\d+ (passed|failed|errors?|deselected)\b", line)]
    last = lines[-1] if lines else (text.strip().splitlines() or [""])[-1]
    return re.sub(r"=+|\s+in [\d.]+s.*", "", last).strip()[:80]


@dataclass
class Result:
    """One fault's verdict."""

    fault: Fault
    outcome: Outcome

    @property
    def caught(self) -> bool:
        """The selection failed under the fault (test failures, collection errors or a time-out)."""
        return self.outcome.rc in (1, 2, -1)

    @property
    def selection_error(self) -> bool:
        """pytest could not run the selection (no tests collected, usage or internal error)."""
        return self.outcome.rc in (3, 4, 5)


def plant(root: Path, fault: Fault) -> str:
    """Write ``fault`` into the copy at ``root``; returns the original text for :func:`restore`."""
    path = root / fault.file
    text = path.read_text()
    if text.count(fault.original) != 1:
        raise RuntimeError(f"{fault.id}: stale fault, snippet not found exactly once in {fault.file}")
    path.write_text(text.replace(fault.original, fault.replacement))
    return text


def restore(root: Path, fault: Fault, text: str) -> None:
    """Put the original file back."""
    (root / fault.file).write_text(text)


def baseline_groups(faults: Iterable[Fault]) -> list[list[str]]:
    """pytest argument lists that run, together, every fault's selection once (one run per test path)."""
    groups: dict[str, list[str]] = {}
    for f in faults:
        groups.setdefault(f.select, []).append(f.k)
    out = []
    for select, ks in groups.items():
        k = "" if "" in ks else " or ".join(f"({k})" for k in dict.fromkeys(ks))
        out.append([*FLAGS, select, *(["-k", k] if k else [])])
    return out


def run(faults: Sequence[Fault], repo: Path = REPO, baseline: bool = True, timeout: float = 600.0,
        say: Callable[[str], None] = print) -> tuple[list[Result], list[str]]:
    """Run the mutation check in a temporary copy of ``repo``.

    Args:
        faults: Faults to plant (one at a time).
        repo: Repository root (read only).
        baseline: First run every selection on the unmodified copy; it must pass.
        timeout: Seconds allowed per pytest run.
        say: Progress printer.

    Returns:
        ``(results, errors)``: one result per fault; errors are baseline failures and selection errors.
    """
    stale = problems(faults, repo)
    if stale:
        return [], stale
    errors, results = [], []
    preload()
    with tempfile.TemporaryDirectory(prefix="yolo-attn-mutation-") as tmp:
        root = copy_repo(repo, Path(tmp) / "repo")
        if baseline:
            for args in baseline_groups(faults):
                out = run_pytest(root, args, timeout)
                say(f"baseline {' '.join(shlex.quote(a) for a in args[len(FLAGS):])}: {out.summary} "
                    f"({out.seconds:.0f} s, {out.cpu:.0f} CPU-s)")
                if out.rc != 0:
                    errors.append(f"baseline run failed without any fault (rc={out.rc}): {args}\n{out.tail}")
            if errors:
                return results, errors
        for i, fault in enumerate(faults, 1):
            text = plant(root, fault)
            try:
                result = Result(fault, run_pytest(root, pytest_args(fault), timeout))
            finally:
                restore(root, fault, text)
            results.append(result)
            verdict = "caught" if result.caught else ("SELECTION ERROR" if result.selection_error else "SURVIVED")
            say(f"[{i}/{len(faults)}] {fault.id}: {verdict} ({result.outcome.summary}, {result.outcome.seconds:.0f} s, "
                f"{result.outcome.cpu:.0f} CPU-s)")
            if result.selection_error:
                errors.append(f"{fault.id}: pytest could not run the selection (rc={result.outcome.rc})\n"
                              f"{result.outcome.tail}")
    return results, errors


# ---------------------------------------------------------------------------------------------------------- report
def table(results: Sequence[Result]) -> str:
    """Markdown table: fault, file, what it plants, tests run, caught, wall and CPU seconds."""
    rows = ["| fault | file | planted mistake | tests run | result | caught | seconds | CPU-s |",
            "|---|---|---|---|---|---|---:|---:|"]
    for r in results:
        caught = "yes" if r.caught else "**NO**"
        rows.append(f"| {r.fault.id} | {r.fault.file} | {r.fault.what} | `{r.fault.shown()}` | {r.outcome.summary} | "
                    f"{caught} | {r.outcome.seconds:.0f} | {r.outcome.cpu:.0f} |")
    return "\n".join(rows)


def environment() -> str:
    """Machine and versions, without paths."""
    versions = []
    for name in ("torch", "ultralytics", "numpy", "onnxruntime", "pytest"):
        try:
            versions.append(f"{name} {__import__(name).__version__}")
        except Exception:  # noqa: BLE001 - a missing optional package is just not listed
            continue
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
            + ", ".join(versions))


def report(results: Sequence[Result], command: str, seconds: float, cpu: float, load: float) -> str:
    """The docs/MUTATION.md text.

    Args:
        results: One result per fault.
        command: The command line that produced them.
        seconds: Wall time of the whole run (baselines included).
        cpu: CPU seconds of the whole run (this process and every pytest run).
        load: The machine's 15-minute load average at the end of the run.
    """
    caught = sum(r.caught for r in results)
    return "\n".join([
        "# Mutation check",
        "",
        "Planted faults, one at a time, in a temporary copy of the repository; for each, the tests that claim to",
        "rule it out were run (`python -m pytest -x -q`). Every fault must be caught. The fault table lives in",
        "`tests/mutation_faults.py`; re-target a fault there when the code it names changes.",
        "",
        f"- Command: `{command}`",
        f"- Machine: {environment()}",
        f"- Result: {caught} of {len(results)} faults caught.",
        f"- Time, baseline runs included: {seconds / 60:.1f} minutes wall on a shared machine (15-minute load average "
        f"{load:.1f} on {os.cpu_count()} CPUs at the end); {cpu / 60:.1f} CPU-minutes. The runs are sequential, so on "
        "an idle machine the wall time is about the CPU time or less (torch uses both cores).",
        "",
        table(results),
        "",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see ``scripts/mutate.py``).

    Args:
        argv: Arguments without the program name.

    Returns:
        0 when every fault was caught; 1 when one survived; 2 on stale faults, failing baselines or selection errors.
    """
    p = argparse.ArgumentParser(prog="scripts/mutate.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help="comma-separated fault ids (default: all)")
    p.add_argument("--list", action="store_true", help="list the faults and exit")
    p.add_argument("--check", action="store_true", help="only check that every snippet is found (stale faults)")
    p.add_argument("--no-baseline", action="store_true", help="skip the unmodified runs of the selections")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per pytest run")
    p.add_argument("--out", default="docs/MUTATION.md", help="report file, relative to the repo ('' for none)")
    a = p.parse_args(argv)
    faults = [f for f in FAULTS if not a.only or f.id in a.only.split(",")]
    unknown = set(filter(None, a.only.split(","))) - {f.id for f in FAULTS}
    if unknown:
        print(f"unknown fault ids: {sorted(unknown)}", file=sys.stderr)
        return 2
    if a.list:
        for f in faults:
            print(f"{f.id:28s} {f.file:36s} {f.shown()}")
        return 0
    if a.check:
        issues = problems(faults)
        print("\n".join(issues) or f"{len(faults)} faults, every snippet found once")
        return 2 if issues else 0
    start, cpu = time.monotonic(), children_cpu() + _own_cpu()
    results, errors = run(faults, baseline=not a.no_baseline, timeout=a.timeout)
    wall, cpu = time.monotonic() - start, children_cpu() + _own_cpu() - cpu
    for e in errors:
        print(f"ERROR: {e}", file=sys.stderr)
    if errors:
        return 2
    print()
    print(table(results))
    command = "nice -n 19 python scripts/mutate.py" + "".join(f" {shlex.quote(x)}" for x in (argv or sys.argv[1:]))
    if a.out and not a.only:
        (REPO / a.out).write_text(report(results, command, wall, cpu, os.getloadavg()[2]))
        print(f"\nwritten {a.out}")
    survived = [r.fault.id for r in results if not r.caught]
    print(f"\n{wall / 60:.1f} minutes wall, {cpu / 60:.1f} CPU-minutes")
    print(f"{len(results) - len(survived)} of {len(results)} faults caught" +
          (f"; SURVIVED: {', '.join(survived)}" if survived else ""))
    return 1 if survived else 0
