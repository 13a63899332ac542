"""``yolo-attn bench models``: every config next to plain YOLOv5 and ultralytics' own attention blocks as peers.

Peers (comparison only, never shipped): ultralytics' ``C3TR`` in the ``C3Attn`` slots of ``yolov5-c3tr``
(:func:`yolo_attn.bench.models.c3tr_peer_config`) and ultralytics' area attention ``A2C2f`` (YOLO12) placed in YOLOv5
where ``yolov5-local`` puts attention: P5 (layer 8, ``area=1``) and the P4/P3 neck (layers 13 and 17, ``area=4``).

Cost columns come from :mod:`yolo_attn.bench.models` (parameters, FLOPs at the real input size including attention
matmuls, interleaved PyTorch CPU latency); this module adds ONNX Runtime latency, measured the same way (batch 1,
fixed threads, interleaved rounds, median) on a legacy-exporter ONNX file of the fused model.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from . import models as M
from . import report

__all__ = ["a2c2f_peer_config", "peer_configs", "onnx_latency", "default_configs", "run_models_benchmark"]

#: (layer index, [c2, a2, area]) of the A2C2f peer: the slots of yolov5-local's attention layers.
A2C2F_SLOTS = {8: [1024, True, 1], 13: [512, True, 4], 17: [256, True, 4]}


def a2c2f_peer_config(scale: str = "n") -> dict:
    """Plain YOLOv5 at ``scale`` with ultralytics' ``A2C2f`` (area attention) in the slots of :data:`A2C2F_SLOTS`.

    Args:
        scale: Model scale letter.

    Returns:
        A model dict for :func:`yolo_attn.bench.models.build_model`.
    """
    from ultralytics.nn.tasks import yaml_model_load

    from ..integration import resolve_config

    d = copy.deepcopy(yaml_model_load(str(resolve_config(f"yolov5{scale}.yaml"))))
    layers = d["backbone"] + d["head"]
    for i, args in A2C2F_SLOTS.items():
        layers[i][2], layers[i][3] = "A2C2f", list(args)
    d["scale"] = scale
    return d


def peer_configs(scale: str = "n") -> dict[str, dict]:
    """``{row name: model dict}`` of ultralytics' attention peers at one scale."""
    c3tr = M.c3tr_peer_config(f"yolov5{scale}-c3tr.yaml")
    c3tr["scale"] = scale
    return {f"yolov5{scale}-C3TR (ultralytics)": c3tr, f"yolov5{scale}-A2C2f (ultralytics)": a2c2f_peer_config(scale)}


def default_configs() -> list[str]:
    """Every shipped config, unscaled (``yolov5.yaml`` first)."""
    from ..integration import CONFIG_DIR

    names = sorted(p.name for p in Path(CONFIG_DIR).glob("yolov5*.yaml"))
    return sorted(names, key=lambda n: (n != "yolov5.yaml", n))


def _export_onnx(model: nn.Module, path: Path, imgsz: int) -> Path:
    import warnings

    m = M._prepare(model)
    for layer in m.modules():
        if hasattr(layer, "export") and isinstance(getattr(layer, "export"), bool):
            layer.export = True  # Detect: one output tensor, as ultralytics exports it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, torch.zeros(1, 3, imgsz, imgsz), str(path), opset_version=17, dynamo=False,
                          input_names=["images"], output_names=["output0"])
    return path


def onnx_latency(
    models: Mapping[str, nn.Module],
    imgsz: int = 640,
    repeats: int = 15,
    warmup: int = 2,
    threads: int | None = 2,
) -> tuple[dict[str, float | None], dict[str, str]]:
    """Median ONNX Runtime CPU latency (ms, batch 1) of several models, timed interleaved.

    Args:
        models: ``{name: model}`` (exported fused, in eval mode, at ``imgsz``).
        imgsz: Square input size.
        repeats: Timed rounds; each runs every session once.
        warmup: Untimed rounds first.
        threads: ``intra_op_num_threads`` of each session (``None``: ONNX Runtime's default).

    Returns:
        ``({name: ms or None}, {name: error})``; a model that fails to export or load gets None and its error.
    """
    import numpy as np
    import onnxruntime as ort

    sessions, errors = {}, {}
    x = np.zeros((1, 3, imgsz, imgsz), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="yolo_attn_onnx_") as tmp:
        for i, (name, model) in enumerate(models.items()):
            try:
                f = _export_onnx(model, Path(tmp) / f"m{i}.onnx", imgsz)
                so = ort.SessionOptions()
                if threads:
                    so.intra_op_num_threads = threads
                    so.inter_op_num_threads = 1
                sessions[name] = ort.InferenceSession(str(f), so, providers=["CPUExecutionProvider"])
            except Exception as e:  # noqa: BLE001  (reported per model, the benchmark goes on)
                errors[name] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for r in range(warmup + repeats):
            for k, s in sessions.items():
                t0 = time.perf_counter()
                s.run(None, {"images": x})
                if r >= warmup:
                    times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: (statistics.median(times[k]) if k in times and times[k] else None) for k in models}, errors


def run_models_benchmark(
    configs: Iterable[str] | None = None,
    scales: Iterable[str] = ("n",),
    imgsz: int = 640,
    repeats: int = 10,
    warmup: int = 2,
    threads: int | None = 2,
    onnx: bool = True,
    peers: bool = True,
    out_dir: str | Path = "benchmarks",
    command: str = "",
) -> list[dict]:
    """Params, GFLOPs, PyTorch and ONNX Runtime latency of configs and peers; writes ``models.{csv,md,png}``.

    Args:
        configs: Unscaled config names (default: every shipped config, :func:`default_configs`).
        scales: Scales to build every config at (``yolov5s`` plain is always added as a reference).
        imgsz: Input size for FLOPs and latency.
        repeats: Timed rounds per latency.
        warmup: Untimed rounds.
        threads: CPU threads for both runtimes.
        onnx: Also measure ONNX Runtime latency.
        peers: Add ultralytics' C3TR and A2C2f peers.
        out_dir: Output directory.
        command: Command line recorded in the markdown header.

    Returns:
        One row per model: ``model, scale, params_M, gflops, torch_ms, onnx_ms, note``.
    """
    configs = list(configs) if configs is not None else default_configs()
    scales = list(scales)
    models: dict[str, tuple[str, nn.Module]] = {}
    todo: list[tuple[str, str, str | dict]] = []
    for s in scales:
        todo += [(Path(c).stem.replace("yolov5", f"yolov5{s}", 1), s, Path(c).name.replace("yolov5", f"yolov5{s}", 1))
                 for c in configs]
        if peers:
            todo += [(k, s, d) for k, d in peer_configs(s).items()]
    if "s" not in scales and any(Path(c).name == "yolov5.yaml" for c in configs):
        todo.append(("yolov5s", "s", "yolov5s.yaml"))
    rows = []
    for name, s, cfg in report.progress(todo, desc="bench models: build + FLOPs"):
        model = M.build_model(cfg)
        models[name] = (s, model)
        rows.append({"model": name, "scale": s, "params_M": M.count_params(model) / 1e6,
                     "gflops": M.count_gflops(model, imgsz), "torch_ms": None, "onnx_ms": None, "note": ""})
    nets = {k: m for k, (_, m) in models.items()}
    lat = M.measure_latency(nets, imgsz, repeats=repeats, warmup=warmup, threads=threads)
    ort_ms, errors = onnx_latency(nets, imgsz, repeats, warmup, threads) if onnx else ({}, {})
    for row in rows:
        row["torch_ms"] = lat.get(row["model"])
        row["onnx_ms"] = ort_ms.get(row["model"])
        row["note"] = errors.get(row["model"], "")
    out = Path(out_dir)
    report.write_csv(rows, out / "models.csv")
    notes = report.header_notes(command) + [
        f"imgsz {imgsz}, batch 1, {threads} threads, median of {repeats} interleaved rounds after {warmup} warm-up. "
        "GFLOPs counted at the real input size with torch's FlopCounterMode (attention matmuls included, "
        "1 multiply-add = 2 FLOPs). ONNX: legacy exporter, opset 17, fused model, CPUExecutionProvider."
    ]
    report.write_markdown(rows, out / "models.md", "Model cost: params, GFLOPs, latency", notes)
    report.plot_bars(
        {r["model"]: {"PyTorch": r["torch_ms"], "ONNX Runtime": r["onnx_ms"]} for r in rows},
        out / "models.png", f"CPU latency at {imgsz} px, batch 1 ({threads} threads)", "latency (ms)",
        annotate={r["model"]: f"{r['gflops']:.1f} GFLOPs" for r in rows},
    )
    return rows
