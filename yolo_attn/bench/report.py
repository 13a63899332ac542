"""Shared output writers of the benchmarks: CSV, markdown table, log-log / Pareto PNG plots, progress bar, machine info.

Every ``yolo-attn bench ...`` writes the same three files per benchmark into one output directory
(``<name>.csv``, ``<name>.md``, ``<name>.png``); these functions are the only place that formats them.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import platform
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "progress", "write_csv", "write_markdown", "markdown_table", "plot_lines", "plot_bars", "plot_pareto",
    "pareto_front", "machine_info", "header_notes", "torch_threads",
]


def progress(iterable: Iterable, desc: str, total: int | None = None):
    """Progress bar over ``iterable`` (ultralytics' TQDM, which respects ``YOLO_VERBOSE``).

    Args:
        iterable: Items to iterate.
        desc: Label shown left of the bar.
        total: Number of items when ``iterable`` has no ``len``.

    Returns:
        An iterator yielding the items of ``iterable``.
    """
    from ultralytics.utils import TQDM

    return TQDM(iterable, desc=desc, total=total)


def _cell(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _columns(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path, columns: Sequence[str] | None = None) -> Path:
    """Write rows (dicts) to a CSV file, one column per key (missing values left empty).

    Args:
        rows: Result rows.
        path: Output ``.csv`` path (parent directories are created).
        columns: Column order; defaults to first appearance in ``rows``.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = _columns(rows, columns)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in cols})
    return path


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, digits: int = 4) -> str:
    """A GitHub markdown table of ``rows`` (floats to ``digits`` significant digits, None as empty)."""
    cols = _columns(rows, columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_cell(row.get(c), digits) for c in cols) + " |" for row in rows]
    return "\n".join(lines)


def write_markdown(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    title: str,
    notes: Sequence[str] = (),
    columns: Sequence[str] | None = None,
) -> Path:
    """Write a markdown file: a title, notes (one paragraph each, e.g. machine and command), then the table.

    Args:
        rows: Result rows.
        path: Output ``.md`` path.
        title: Heading.
        notes: Paragraphs printed above the table.
        columns: Column order.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = [f"# {title}", "", *(line for note in notes for line in (note, "")), markdown_table(rows, columns), ""]
    path.write_text("\n".join(body))
    return path


def _figure(size=(7.5, 5.0)):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=size, dpi=110)


def plot_lines(
    series: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path,
    title: str,
    xlabel: str,
    ylabel: str,
    loglog: bool = True,
) -> Path:
    """Line plot, one line per series (points sorted by x), log-log by default.

    Args:
        series: ``{label: [(x, y), ...]}``; non-finite or missing y values are skipped.
        path: Output ``.png`` path.
        title: Plot title.
        xlabel: X axis label.
        ylabel: Y axis label.
        loglog: Log scale on both axes.

    Returns:
        ``path``.
    """
    plt, fig, ax = _figure()
    markers = "os^vD<>phX*"
    for i, (label, pts) in enumerate(series.items()):
        pts = sorted((x, y) for x, y in pts if y is not None and math.isfinite(y) and (y > 0 or not loglog))
        if pts:
            ax.plot(*zip(*pts), marker=markers[i % len(markers)], ms=4, lw=1.4, label=label,
                    ls="--" if label.startswith(("sdpa", "flex")) else "-")
    if loglog:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_bars(
    groups: Mapping[str, Mapping[str, float | None]],
    path: str | Path,
    title: str,
    xlabel: str,
    annotate: Mapping[str, str] | None = None,
) -> Path:
    """Horizontal grouped bars: one row per group (e.g. model), one bar per series (e.g. runtime).

    Args:
        groups: ``{row label: {series: value or None}}`` (None / non-finite values are not drawn).
        path: Output ``.png`` path.
        title: Plot title.
        xlabel: Value axis label.
        annotate: Optional ``{row label: text}`` written right of the row's bars.

    Returns:
        ``path``.
    """
    import numpy as np

    labels = list(groups)
    series = list(dict.fromkeys(k for g in groups.values() for k in g))
    plt, fig, ax = _figure((8.0, 1.0 + 0.42 * len(labels) * max(len(series), 1) ** 0.5))
    height = 0.8 / max(len(series), 1)
    y = np.arange(len(labels))
    for j, s in enumerate(series):
        vals = [groups[k].get(s) for k in labels]
        vals = [v if v is not None and math.isfinite(v) else 0.0 for v in vals]
        ax.barh(y + (j - (len(series) - 1) / 2) * height, vals, height, label=s)
    for i, k in enumerate(labels):
        if annotate and k in annotate:
            top = max((v for v in groups[k].values() if v is not None and math.isfinite(v)), default=0.0)
            ax.text(top, i, "  " + annotate[k], va="center", fontsize=7)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set(title=title, xlabel=xlabel)
    ax.margins(x=0.25)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the Pareto-optimal points for (cost to minimise, score to maximise), sorted by cost.

    Examples:
        >>> pareto_front([(1.0, 0.5), (2.0, 0.4), (3.0, 0.7)])
        [0, 2]
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_pareto(
    points: Mapping[str, tuple[float, float, float]],
    path: str | Path,
    title: str,
    xlabel: str,
    ylabel: str,
) -> Path:
    """Scatter of (cost, score +- spread) per label with the Pareto front drawn as a step line.

    Args:
        points: ``{label: (cost, mean score, std of score)}``.
        path: Output ``.png`` path.
        title: Plot title.
        xlabel: Cost axis label (lower is better).
        ylabel: Score axis label (higher is better).

    Returns:
        ``path``.
    """
    plt, fig, ax = _figure()
    labels = list(points)
    xy = [(points[k][0], points[k][1]) for k in labels]
    front = pareto_front(xy)
    for i, k in enumerate(labels):
        x, y, s = points[k]
        on = i in front
        ax.errorbar(x, y, yerr=s or 0.0, fmt="o", ms=7 if on else 5, capsize=3,
                    color="tab:red" if on else "tab:blue", alpha=1.0 if on else 0.7)
        ax.annotate(k, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    if front:
        fx, fy = zip(*(xy[i] for i in front))
        ax.step(fx, fy, where="post", color="tab:red", lw=1, alpha=0.6, label="Pareto front")
        ax.legend(fontsize=8, loc="lower right")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def machine_info() -> dict[str, str]:
    """Machine and library versions, for the header of every benchmark report."""
    import torch

    try:
        import ultralytics

        ultra = ultralytics.__version__
    except ImportError:  # pragma: no cover
        ultra = "-"
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = "-"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "cpu": f"{cpu} ({os.cpu_count()} logical cores, torch threads {torch.get_num_threads()})",
        "gpu": gpu,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "ultralytics": ultra,
        "onnxruntime": ort,
        "platform": platform.platform(),
    }


_PATH_WORD = re.compile(r"(?<!\S)((?:[\w.-]+=)?)([/~][^\s'\"`]*)")


def portable_command(command: str) -> str:
    """The command with its absolute (and ``~``) paths shortened: relative to the working directory when inside it,
    else ``.../<at most the last two parts>``, so no machine's folder layout reaches a committed report.

    Examples:
        >>> portable_command("yolo-attn bench accuracy data=/srv/data/highway-320/data.yaml out=benchmarks")
        'yolo-attn bench accuracy data=.../highway-320/data.yaml out=benchmarks'
    """
    cwd = Path.cwd()

    def shorten(m: re.Match) -> str:
        p = Path(m.group(2)).expanduser()
        try:
            return m.group(1) + str(p.relative_to(cwd))
        except ValueError:
            # at most the last two parts, never the two below the root (/home/<user>, /tmp/<dir>, ...)
            return m.group(1) + "/".join(["...", *(p.parts[3:][-2:] or p.parts[-1:])])

    return _PATH_WORD.sub(shorten, command)


def header_notes(command: str) -> list[str]:
    """Markdown paragraphs naming the machine, versions and the command (paths made portable, for
    :func:`write_markdown`)."""
    info = machine_info()
    return [
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()),
        f"Command: `{portable_command(command)}`",
    ]


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with ``torch.set_num_threads(n)`` (``None``: unchanged), restoring the previous count after."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
