"""The report of ``yolo-attn bench gpu``: ``gpu.csv`` (appended, one row per measurement), ``gpu.md`` and ``gpu.png``
(regenerated from the whole CSV after every part: for each part, its latest run).

Rows share the columns :data:`FIELDS`; a part fills the ones it measures. Every text written (command, notes) has
absolute paths reduced to their last component, so a committed report names no machine's directories.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .report import machine_info, markdown_table

__all__ = ["FIELDS", "append_rows", "read_rows", "write_gpu_report", "kernel_winners", "strip_paths"]

FIELDS = [
    "run", "part", "case", "contender", "mode", "dtype", "batch", "size", "median_ms", "vs_tiled", "peak_MB",
    "compile_s", "images_per_s", "value", "note", "gpu", "torch", "command",
]
_ABS_PATH = re.compile(r"(?<![\w.~-])~?/(?:[^\s/'\"`=,]+/)*([^\s/'\"`=,]+)")


def strip_paths(text: Any) -> Any:
    """Replace absolute (and ``~``) paths in a string by their last component; other values pass through.

    Examples:
        >>> strip_paths("yolo-attn bench gpu out=/home/me/b data=~/d/x.yaml")
        'yolo-attn bench gpu out=b data=x.yaml'
    """
    return _ABS_PATH.sub(r"\1", text) if isinstance(text, str) else text


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """Rows of an existing ``gpu.csv`` (empty list if there is none)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def append_rows(rows: Iterable[Mapping[str, Any]], path: str | Path) -> list[dict[str, Any]]:
    """Append rows to ``path`` (created with a header when missing; earlier rows kept); returns every row."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    everything = [*read_rows(path), *({k: strip_paths(r.get(k)) for k in FIELDS} for r in rows)]
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in everything:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in FIELDS})
    tmp.replace(path)
    return everything


def _num(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _latest(rows: Sequence[Mapping[str, Any]], part: str) -> list[Mapping[str, Any]]:
    mine = [r for r in rows if r.get("part") == part]
    if not mine:
        return []
    last = max(str(r.get("run")) for r in mine)
    return [r for r in mine if str(r.get("run")) == last]


def kernel_winners(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """Fastest exact backend (``tiled`` or ``flex``) per pattern and size, forward + backward (the training case).

    Args:
        rows: Kernel rows (``case`` = ``"<pattern> <h>x<w>"``).

    Returns:
        ``{pattern: {size: "flex (1.8x)"}}``: the winner and its speed-up over the other backend.
    """
    times: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:
        ms = _num(r.get("median_ms"))
        if r.get("mode") == "fwd+bwd" and r.get("contender") in ("tiled", "flex") and ms is not None:
            pattern = str(r["case"]).rsplit(" ", 1)[0]
            times.setdefault((pattern, str(r.get("size"))), {})[str(r["contender"])] = ms
    out: dict[str, dict[str, str]] = {}
    for (pattern, size), t in times.items():
        best = min(t, key=t.get)
        other = [v for k, v in t.items() if k != best]
        out.setdefault(pattern, {})[size] = f"{best} ({other[0] / t[best]:.2f}x)" if other else f"{best} (alone)"
    return out


def _goals(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The issue's goals at local 7x7, 80x80, bf16, batch 32, forward + backward; and training throughput."""
    lines = []
    k = {r["contender"]: _num(r.get("median_ms")) for r in rows
         if r.get("part") == "kernels" and r.get("case") == "local 80x80" and r.get("mode") == "fwd+bwd"}
    ours = k.get("tiled") if k.get("flex") is None else min(v for v in (k.get("tiled"), k.get("flex")) if v)
    if ours:
        mask = k.get("SDPA + bool mask")
        lines.append("- local 7x7 at 80x80 fwd+bwd vs SDPA + bool mask: "
                     + (f"{mask / ours:.1f}x faster (goal >= 10x)" if mask else "SDPA + bool mask not measured"))
        peers = [v for name, v in k.items() if name in ("flex", "NATTEN") and v]
        if peers:
            lines.append(f"- ours (best backend) vs fastest of FlexAttention / NATTEN: {min(peers) / ours:.2f}x "
                         "(goal >= 1)")
    t = {r["case"]: _num(r.get("images_per_s")) for r in rows if r.get("part") == "train"}
    if t.get("yolov5s") and t.get("yolov5s-local"):
        lines.append(f"- training throughput yolov5s-local / yolov5s: {t['yolov5s-local'] / t['yolov5s']:.2f} "
                     "(goal >= 0.85)")
        a2 = next((v for name, v in t.items() if "A2C2f" in name and v), None)
        if a2:
            lines.append(f"- yolov5s-local / A2C2f peer: {t['yolov5s-local'] / a2:.2f} (goal > 1)")
    return lines


_COLUMNS = {
    "kernels": ["case", "mode", "contender", "median_ms", "vs_tiled", "peak_MB", "compile_s", "note"],
    "train": ["case", "batch", "size", "dtype", "images_per_s", "median_ms", "peak_MB", "note"],
    "infer": ["case", "contender", "batch", "size", "dtype", "median_ms", "value", "note"],
    "amp": ["case", "contender", "value", "median_ms", "note"],
}
_DESCRIPTION = {
    "kernels": "Attention kernels: median of interleaved rounds (A B A B ...), CUDA events; `vs_tiled` = time / time "
               "of our tiled path; `peak_MB` = peak allocated minus the inputs; `compile_s` = first call minus the "
               "median (torch.compile of FlexAttention, forward and backward apart).",
    "train": "Training throughput: manual step loop (ultralytics' detection loss on a synthetic batch, SGD, AMP = "
             "autocast fp16 + GradScaler), steady state after warm-up; models interleaved round by round; "
             "`median_ms` per step.",
    "infer": "Inference latency: fused model in eval mode, fp16 (`value` = TensorRT parity, max |diff| vs PyTorch "
             "fp16), median of interleaved rounds.",
    "amp": "AMP end to end: `yolo-attn train` runs (training + half-precision validation) launched concurrently; "
           "`value` = final mAP50-95, `median_ms` = wall time of the run.",
}


def write_gpu_report(rows: Sequence[Mapping[str, Any]], out_dir: str | Path) -> dict[str, Path]:
    """Append ``rows`` to ``out_dir/gpu.csv`` and regenerate ``gpu.md`` and ``gpu.png`` from the whole CSV.

    Args:
        rows: New rows (keys from :data:`FIELDS`).
        out_dir: Output directory.

    Returns:
        ``{"csv": path, "md": path, "png": path}``.
    """
    out = Path(out_dir)
    everything = append_rows(rows, out / "gpu.csv")
    info = machine_info()
    lines = ["# GPU study: attention kernels, training throughput, inference latency, AMP", "",
             "Written by `yolo-attn bench gpu` (yolo_attn/bench/gpu.py). Each part shows its latest run; earlier runs "
             "stay in gpu.csv.", ""]
    goals = _goals([r for part in _COLUMNS for r in _latest(everything, part)])
    if goals:
        lines += ["## Goals", "", *goals, ""]
    for part, columns in _COLUMNS.items():
        latest = _latest(everything, part)
        if not latest:
            continue
        first = latest[0]
        lines += [f"## {part}", "", _DESCRIPTION[part], "",
                  f"Run {first.get('run')}; GPU {first.get('gpu') or '-'}; torch {first.get('torch') or '-'}; "
                  f"command `{first.get('command')}`.", ""]
        if part == "kernels":
            winners = kernel_winners(latest)
            if winners:
                sizes = sorted({s for w in winners.values() for s in w}, key=lambda s: int(s.split("x")[0]))
                lines += ["Winner per pattern, forward + backward (fill `CUDA_BACKEND` in "
                          "yolo_attn/attention/flex.py from this):", "",
                          markdown_table([{"pattern": p, **{s: w.get(s, "") for s in sizes}} for p, w in
                                          winners.items()]), ""]
        lines += [markdown_table(latest, columns), ""]
    lines += ["Report written on: " + "; ".join(f"{k} {strip_paths(v)}" for k, v in info.items()), ""]
    (out / "gpu.md").write_text("\n".join(lines))
    _plot(everything, out / "gpu.png")
    return {"csv": out / "gpu.csv", "md": out / "gpu.md", "png": out / "gpu.png"}


def _plot(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 5), dpi=100)
    kern = [r for r in _latest(rows, "kernels") if r.get("mode") == "fwd+bwd" and _num(r.get("median_ms"))]
    ax = axes[0]
    for contender in dict.fromkeys(r["contender"] for r in kern):
        pts = {}
        for r in kern:
            if r["contender"] == contender and str(r["case"]).startswith("local "):
                pts[int(str(r["size"]).split("x")[0]) ** 2] = _num(r["median_ms"])
        if pts:
            ax.loglog(*zip(*sorted(pts.items())), marker="o", label=contender)
    ax.set(title="local 7x7, forward + backward", xlabel="tokens N", ylabel="median ms")
    for part, key, axis, label in (("train", "images_per_s", axes[1], "images / s"),
                                   ("infer", "median_ms", axes[2], "median ms")):
        data = [(f"{r['case']} {r.get('contender') or ''} b{r.get('batch')}".strip(), _num(r.get(key)))
                for r in _latest(rows, part) if _num(r.get(key))]
        if data:
            names, values = zip(*data)
            axis.barh(range(len(values)), values)
            axis.set_yticks(range(len(values)), names, fontsize=7)
            axis.invert_yaxis()
        axis.set(title=part, xlabel=label)
    for axis in axes:
        axis.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
