#!/usr/bin/env python
"""Config gallery: parameters, GFLOPs at 640 (attention matmuls included), CPU latency and the transfer from the
stock checkpoint of its family (YOLOv5u, YOLOv8, YOLO11) of every shipped config.

Writes ``benchmarks/gallery.md`` and ``benchmarks/gallery.csv``. All latencies of one scale come from one interleaved
run (:func:`yolo_attn.bench.models.measure_latency`), together with comparison models that are *not* shipped: plain
YOLOv5 (``yolov5.yaml``, shipped as the baseline), ultralytics' own ``C3TR`` in the ``C3Attn`` slot of
``yolov5-c3tr``, and ultralytics' stock YOLOv8, YOLO11 and YOLO12. The acceptance ratios (``yolov5n-local /
yolov5n`` <= 1.25, ``yolov5n-c3tr / C3TR peer`` <= 1.05, ``yolo11n-local / yolo11n`` <= 1.15, ``yolo11n-local /
yolo12n`` < 1) are printed and written. The transfer column is deterministic
(:func:`yolo_attn.bench.models.stock_transfer`: stock tensors that transfer, and whether the decoded predictions at
step 0 equal the stock model's).

    python scripts/gallery.py                       # params/GFLOPs/transfer at n/s/m/l/x, latency at n
    python scripts/gallery.py --scales n --repeats 5
    python scripts/gallery.py --latency-scales ""   # no timing (on a loaded machine)
"""

from __future__ import annotations

import argparse
import shlex
import os
import sys
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported: no network probe
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from yolo_attn.bench import report  # noqa: E402
from yolo_attn.bench.models import c3tr_peer_config, gallery  # noqa: E402
from yolo_attn.configs import FAMILIES, family, scaled, shipped  # noqa: E402

PEER = "peer: ultralytics C3TR in yolov5-c3tr (not shipped)"
#: ultralytics' stock models shown beside the YOLOv8 / YOLO11 configs (yolov5.yaml is shipped as the baseline).
STOCK = ["yolov8.yaml", "yolo11.yaml", "yolo12.yaml"]
#: the row whose latency a row is divided by in the "x stock" column, by family (YOLO12 against YOLO11)
REFERENCE = {"yolov5": "yolov5", "yolov8": "yolov8", "yolo11": "yolo11", "yolo12": "yolo11"}
RATIOS = {  # name: (model, reference, limit)
    "yolov5n-local / yolov5n": ("yolov5-local", "yolov5", 1.25),
    "yolov5n-c3tr / ultralytics C3TR peer": ("yolov5-c3tr", PEER, 1.05),
    "yolo11n-local / yolo11n": ("yolo11-local", "yolo11", 1.15),
    "yolo11n-local / yolo12n": ("yolo11-local", "yolo12", 1.0),
}


TRANSFER = "transfer from stock checkpoint"


def _transfer_cell(t: dict | None) -> str:
    if t is None:
        return "-"
    return f"{t['transferred']}/{t['stock_tensors']}, step-0 equal: {'yes' if t['step0_equal'] else 'no'}"


def _family(config: str) -> str:
    return "yolov5" if config == PEER else family(f"{config}.yaml")


def _order(r: dict) -> tuple:
    """Rows of a scale: by family (YOLOv5, its C3TR peer last; YOLOv8; YOLO11; YOLO12), the stock model first."""
    fams = [*FAMILIES, "yolo12"]
    return ("nsmlx".index(r["scale"]), fams.index(_family(r["config"])), r["config"] != _family(r["config"]),
            r["config"] == PEER, r["config"])


def _replace_marked(path: Path, block: str) -> None:
    """Replace the text between the gallery markers of ``path`` (files without both markers are left alone)."""
    start, end = "<!-- gallery:start -->", "<!-- gallery:end -->"
    text = path.read_text() if path.exists() else ""
    if start in text and end in text:
        head, rest = text.split(start, 1)
        path.write_text(f"{head}{start}\n{block}\n{end}{rest.split(end, 1)[1]}")


def selected(configs: str) -> list[str]:
    """The configs of a run: the named shipped ones (all by default) and the stock models always; a name that is not
    shipped is refused in one line."""
    names = [c.strip() for c in configs.split(",") if c.strip()] or shipped()
    unknown = [c for c in names if c not in shipped()]
    if unknown:
        raise SystemExit(f"--configs: {', '.join(unknown)} not shipped; shipped: {', '.join(shipped())}")
    return [c for c in shipped() if c in names] + STOCK


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="", help="comma-separated shipped configs (yolov5-local.yaml, ...); default "
                    "all, with ultralytics' stock YOLOv8 / YOLO11 / YOLO12 and the C3TR peer beside them")
    ap.add_argument("--scales", default="nsmlx", help="scales for params / GFLOPs (letters)")
    ap.add_argument("--latency-scales", default="n", help="scales whose CPU latency is measured (letters)")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--repeats", type=int, default=15, help="interleaved timed rounds (median reported)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--transfer", action=argparse.BooleanOptionalAction, default=True,
                    help="add the 'transfer from stock YOLOv5u' column (deterministic)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks")
    ap.add_argument("--docs", type=Path, nargs="*", default=[ROOT / "README.md"],
                    help="markdown files whose <!-- gallery:start --> ... <!-- gallery:end --> section is replaced")
    args = ap.parse_args(argv)

    configs = selected(args.configs)
    extra = {PEER: lambda s: c3tr_peer_config(f"yolov5{s}-c3tr.yaml")}
    rows = gallery(configs, args.scales, args.latency_scales, args.imgsz, extra=extra, transfer=args.transfer,
                   repeats=args.repeats, threads=args.threads)
    base = {(r["config"], r["scale"]): r["latency_ms"] for r in rows}

    def label(r: dict) -> str:
        return f"{PEER} ({r['scale']})" if r["config"] == PEER else scaled(f"{r['config']}.yaml", r["scale"])[:-5]

    def ratio(r: dict) -> float | None:
        ref = base.get((REFERENCE[_family(r["config"])], r["scale"]))
        return None if r["latency_ms"] is None or not ref else round(r["latency_ms"] / ref, 3)

    table = [
        {
            "config": label(r),
            "params (M)": round(r["params"] / 1e6, 3),
            f"GFLOPs@{args.imgsz}": round(r["gflops"], 2),
            f"CPU ms@{args.imgsz}": None if r["latency_ms"] is None else round(r["latency_ms"], 1),
            "x stock": ratio(r),
            **({TRANSFER: _transfer_cell(r["transfer"])} if "transfer" in r else {}),
        }
        for r in sorted(rows, key=_order)
    ]
    lat = {r["config"]: r["latency_ms"] for r in rows if r["scale"] == "n" and r["latency_ms"] is not None}
    verdicts = []
    for name, (model, ref, limit) in RATIOS.items():
        if model in lat and ref in lat:
            ratio = lat[model] / lat[ref]
            verdicts.append(f"{name} = {ratio:.3f} (limit {limit}: {'met' if ratio <= limit else 'MISSED'})")
    command = "python scripts/gallery.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    notes = report.header_notes(command.strip()) + [
        f"GFLOPs: torch FlopCounterMode over one forward at {args.imgsz}x{args.imgsz} (1 multiply-add = 2 FLOPs), "
        "convolutions, linear layers and attention matmuls included. "
        + (f"Latency: batch 1, eval, fuse(), {args.threads} threads, median of {args.repeats} interleaved rounds, all "
           "models of a scale in one run." if args.latency_scales else "Latency: not measured in this run."),
        *(["Acceptance ratios (same run): " + "; ".join(verdicts)] if verdicts else []),
        "x stock: latency / the stock model of the row's family at that scale (yolov5, yolov8, yolo11; yolo12 against "
        "yolo11).",
        *([(f"{TRANSFER}: tensors of a stock checkpoint of the config's family (ultralytics' yolov5<scale>.yaml, "
            "yolov8<scale>.yaml or yolo11<scale>.yaml, seeded random weights made input-sensitive, standing in for "
            "yolov5<scale>u.pt, yolov8<scale>.pt, yolo11<scale>.pt) that ultralytics' transfer moves into the config, "
            "and whether the decoded boxes and scores then equal the stock model's within 1e-4 (eval, one random "
            "input); - for YOLO12, which no yolo_attn config is built from.")] if args.transfer else []),
    ]
    block = "\n\n".join([*notes[2:], report.markdown_table(table)])
    for doc in args.docs:
        _replace_marked(doc, block)
    report.write_csv(table, args.out / "gallery.csv")
    report.write_markdown(table, args.out / "gallery.md", "Config gallery", notes)
    print(report.markdown_table(table))
    print("\n".join(verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
