"""``yolo-attn bench models``: every config next to plain YOLOv5 and ultralytics' own attention blocks as peers.

Peers (comparison only, never shipped): ultralytics' ``C3TR`` in the ``C3Attn`` slots of ``yolov5-c3tr``
(:func:`yolo_attn.bench.models.c3tr_peer_config`) and ultralytics' area attention ``A2C2f`` (YOLO12) placed in YOLOv5
where ``yolov5-local`` puts attention: P5 (layer 8, ``area=1``) and the P4/P3 neck (layers 13 and 17, ``area=4``).
Beside the YOLOv8 / YOLO11 configs: ultralytics' stock YOLOv8 / YOLO11 and YOLO12 (:func:`stock_references`).

Cost columns come from :mod:`yolo_attn.bench.models` (parameters, FLOPs at the real input size including attention
matmuls, interleaved PyTorch CPU latency); this module adds ONNX Runtime latency, measured the same way (batch 1,
fixed threads, interleaved rounds, median) on a legacy-exporter ONNX file of the fused model.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attention.tiling import fixed_sizes
from ..configs import FAMILIES, family, scaled, shipped, stock_config
from . import models as M
from . import report

__all__ = [
    "DEPLOY_RATIO", "RUNTIMES", "a2c2f_peer_config", "default_configs", "deployment_goal", "peer_configs",
    "run_models_benchmark", "runtime_latency", "stock_references",
]

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
    """Every shipped config, unscaled (``yolov5.yaml`` first, then by family: YOLOv5, YOLOv8, YOLO11)."""
    return shipped()


def stock_references(configs: Iterable[str], scale: str) -> dict[str, str]:
    """``{row name: config}`` of ultralytics' stock models to compare configs of other families with, at ``scale``.

    The stock model of every family other than YOLOv5 among ``configs`` (YOLOv5's, ``yolov5.yaml``, is shipped),
    and YOLO12 (area attention, ultralytics' attention model) beside YOLO11.
    """
    fams = {family(c) for c in configs} - {"yolov5"}
    names = [stock_config(f"{f}.yaml", scale) for f in FAMILIES if f in fams]
    names += [f"yolo12{scale}.yaml"] if "yolo11" in fams else []
    return {Path(n).stem: n for n in names}


def _export_onnx(model: nn.Module, path: Path, imgsz: int) -> Path:
    import warnings

    m = _export_ready(model)
    with warnings.catch_warnings(), fixed_sizes():  # one input size, as ultralytics exports by default
        warnings.simplefilter("ignore")
        torch.onnx.export(m, torch.zeros(1, 3, imgsz, imgsz), str(path), opset_version=17, dynamo=False,
                          input_names=["images"], output_names=["output0"])
    return path


def _export_ready(model: nn.Module) -> nn.Module:
    m = M._prepare(model)
    for layer in m.modules():
        if hasattr(layer, "export") and isinstance(getattr(layer, "export"), bool):
            layer.export = True  # Detect: one output tensor, as ultralytics exports it
    return m


def _onnx_runner(model: nn.Module, folder: Path, imgsz: int, threads: int | None) -> Callable[[], Any]:
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    # ONNX Runtime's idle threads spin after each run by default and slow whatever runs next in an interleaved
    # round (measured: PyTorch yolov5n 145 ms right after an ORT run vs 92 ms alone; 86 ms with spinning off).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    f = _export_onnx(model, folder / "model.onnx", imgsz)
    session = ort.InferenceSession(str(f), so, providers=["CPUExecutionProvider"])
    x = np.zeros((1, 3, imgsz, imgsz), dtype=np.float32)
    return lambda: session.run(None, {"images": x})


def _openvino_runner(model: nn.Module, folder: Path, imgsz: int, threads: int | None) -> Callable[[], Any]:
    """OpenVINO converts the traced model, as ultralytics' ``format=openvino`` export does; f32 inference."""
    import warnings

    import numpy as np
    import openvino as ov

    m, x = _export_ready(model), torch.zeros(1, 3, imgsz, imgsz)
    with warnings.catch_warnings(), torch.no_grad(), fixed_sizes():
        warnings.simplefilter("ignore")
        ov_model = ov.convert_model(torch.jit.trace(m, x, strict=False, check_trace=False), example_input=x)
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(ov_model, "CPU", config)
    request, xn = compiled.create_infer_request(), np.zeros((1, 3, imgsz, imgsz), dtype=np.float32)
    return lambda: request.infer({0: xn})


#: Exported runtimes of the models benchmark: column -> runner builder ``(model, folder, imgsz, threads)``.
RUNTIMES: dict[str, Callable[..., Callable[[], Any]]] = {"onnx_ms": _onnx_runner, "openvino_ms": _openvino_runner}


def runtime_latency(
    models: Mapping[str, nn.Module],
    imgsz: int = 640,
    repeats: int = 15,
    warmup: int = 2,
    threads: int | None = 2,
    runtimes: Iterable[str] = ("onnx_ms", "openvino_ms"),
    reference: Mapping[str, str] | None = None,
) -> tuple[dict[str, dict[str, float | None]], dict[str, str]]:
    """Median CPU latency (ms, batch 1) of every model in PyTorch and the exported runtimes, all interleaved.

    Each round runs every (model, runtime) once in turn, so drift of a shared machine hits all alike. PyTorch runs
    the fused model under ``no_grad`` with ``threads`` torch threads; ONNX Runtime a legacy-exporter (opset 17) file
    of it with ``intra_op_num_threads=threads``; OpenVINO the converted trace (as ultralytics' ``format=openvino``),
    ``INFERENCE_PRECISION_HINT=f32``, ``PERFORMANCE_HINT=LATENCY``, ``INFERENCE_NUM_THREADS=threads``.

    Args:
        models: ``{name: model}``.
        imgsz: Square input size.
        repeats: Timed rounds.
        warmup: Untimed rounds first.
        threads: Threads of every runtime (``None``: each runtime's default).
        runtimes: Columns of :data:`RUNTIMES` to measure besides PyTorch (``torch_ms``).
        reference: ``{name: reference name}``: adds ``torch_x``, ``onnx_x``, ... = the median over rounds of
            ``time(name) / time(reference)`` in the same round and runtime (paired ratios: a slow spell of a shared
            machine that spans a round cancels, which a ratio of the two medians does not).

    Returns:
        ``({name: {"torch_ms": ms, "onnx_ms": ms or None, ..., "torch_x": ratio, ...}}, {name: error})``; a model
        that fails to export or load in a runtime gets None there and its error.
    """
    runners: dict[tuple[str, str], Callable[[], Any]] = {}
    errors: dict[str, str] = {}
    x = torch.zeros(1, 3, imgsz, imgsz)
    with tempfile.TemporaryDirectory(prefix="yolo_attn_runtimes_") as tmp, report.torch_threads(threads):
        for i, (name, model) in enumerate(models.items()):
            fused = M._prepare(model)
            runners[(name, "torch_ms")] = lambda m=fused: m(x)
            for column in runtimes:
                folder = Path(tmp) / f"m{i}-{column}"
                folder.mkdir()
                try:
                    runners[(name, column)] = RUNTIMES[column](model, folder, imgsz, threads)
                except Exception as e:  # noqa: BLE001  (reported per model, the benchmark goes on)
                    first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
                    errors[name] = "; ".join(filter(None, [errors.get(name), f"{column}: {type(e).__name__}: {first}"]))
        times: dict[tuple[str, str], list[float]] = {k: [] for k in runners}
        with torch.no_grad():
            for r in range(warmup + repeats):
                for key, run in runners.items():
                    t0 = time.perf_counter()
                    run()
                    if r >= warmup:
                        times[key].append((time.perf_counter() - t0) * 1e3)
    columns = ["torch_ms", *runtimes]
    out = {name: {c: (statistics.median(times[(name, c)]) if times.get((name, c)) else None) for c in columns}
           for name in models}
    for name, ref in (reference or {}).items():
        for c in columns:
            a, b = times.get((name, c)), times.get((ref, c))
            out[name][c.replace("_ms", "_x")] = statistics.median(x / y for x, y in zip(a, b)) if a and b else None
    return out, errors


def run_models_benchmark(
    configs: Iterable[str] | None = None,
    scales: Iterable[str] = ("n",),
    imgsz: int = 640,
    repeats: int = 10,
    warmup: int = 2,
    threads: int | None = 2,
    onnx: bool = True,
    peers: bool = True,
    openvino: bool = True,
    out_dir: str | Path = "benchmarks",
    command: str = "",
) -> list[dict]:
    """Params, GFLOPs, PyTorch / ONNX Runtime / OpenVINO latency of configs and peers; writes ``models.{csv,md,png}``.

    Args:
        configs: Unscaled config names (default: every shipped config, :func:`default_configs`).
        scales: Scales to build every config at (``yolov5s`` plain is always added as a reference).
        imgsz: Input size for FLOPs and latency.
        repeats: Timed rounds per latency.
        warmup: Untimed rounds.
        threads: CPU threads of every runtime.
        onnx: Also measure ONNX Runtime latency.
        peers: Add ultralytics' C3TR and A2C2f peers, and its stock YOLOv8 / YOLO11 / YOLO12 beside configs of those
            families (:func:`stock_references`).
        openvino: Also measure OpenVINO latency.
        out_dir: Output directory.
        command: Command line recorded in the markdown header.

    Returns:
        One row per model: ``model, scale, params_M, gflops, torch_ms, onnx_ms, openvino_ms, note``.
    """
    configs = list(configs) if configs is not None else default_configs()
    scales = list(scales)
    models: dict[str, tuple[str, nn.Module]] = {}
    todo: list[tuple[str, str, str | dict]] = []
    for s in scales:
        todo += [(Path(scaled(c, s)).stem, s, scaled(c, s)) for c in configs]
        if peers:
            todo += [(k, s, d) for k, d in peer_configs(s).items()]
            todo += [(k, s, c) for k, c in stock_references(configs, s).items()]
    if peers and "s" not in scales and any(Path(c).name == "yolov5.yaml" for c in configs):  # a bigger stock row
        todo.append(("yolov5s", "s", "yolov5s.yaml"))
    rows = []
    for name, s, cfg in report.progress(todo, desc="bench models: build + FLOPs"):
        model = M.build_model(cfg)
        models[name] = (s, model)
        rows.append({"model": name, "scale": s, "params_M": M.count_params(model) / 1e6,
                     "gflops": M.count_gflops(model, imgsz), "torch_ms": None, "onnx_ms": None,
                     "openvino_ms": None, "note": ""})
    nets = {k: m for k, (_, m) in models.items()}
    runtimes = [c for c, on in (("onnx_ms", onnx), ("openvino_ms", openvino)) if on]
    reference = {r["model"]: f"yolov5{r['scale']}" for r in rows if f"yolov5{r['scale']}" in nets}
    lat, errors = runtime_latency(nets, imgsz, repeats, warmup, threads, runtimes, reference)
    ratios = [c.replace("_ms", "_x") for c in ("torch_ms", *runtimes)] if reference else []
    for row in rows:
        row.update({k: v for k, v in lat[row["model"]].items()})
        row["note"] = errors.get(row["model"], "")
    cols = ["model", "scale", "params_M", "gflops", "torch_ms", "onnx_ms", "openvino_ms", *ratios, "note"]
    out = Path(out_dir)
    report.write_csv(rows, out / "models.csv", cols)
    notes = report.header_notes(command) + [
        f"imgsz {imgsz}, batch 1, {threads} threads, median of {repeats} interleaved rounds after {warmup} warm-up. "
        "GFLOPs counted at the real input size with torch's FlopCounterMode (attention matmuls included, "
        "1 multiply-add = 2 FLOPs). PyTorch, ONNX Runtime and OpenVINO timed in the same interleaved rounds. "
        "ONNX: legacy exporter, opset 17, fused model, CPUExecutionProvider, thread spinning off (idle ONNX Runtime threads "
        "otherwise slow the next model of the round). OpenVINO: the traced fused model "
        "converted as ultralytics' format=openvino does, INFERENCE_PRECISION_HINT=f32, PERFORMANCE_HINT=LATENCY. "
        "Both are static exports (one input size: the attention's index plans are graph constants, as with "
        "ultralytics' default dynamic=False)."
        + (" torch_x, onnx_x, openvino_x: latency relative to plain YOLOv5 of the same scale, the median over rounds "
           "of the ratio of the two times in the same round (paired, so a slow spell of the machine cancels); "
           "this is the ratio the goals are read from." if ratios else "")
    ]
    notes += deployment_goal(rows, [Path(scaled(c, s)).stem for s in scales for c in configs
                                    if Path(c).name != "yolov5.yaml"])
    report.write_markdown(rows, out / "models.md", "Model cost: params, GFLOPs, latency", notes, cols)
    report.plot_bars(
        {r["model"]: {"PyTorch": r["torch_ms"], "ONNX Runtime": r["onnx_ms"], "OpenVINO": r["openvino_ms"]}
         for r in rows},
        out / "models.png", f"CPU latency at {imgsz} px, batch 1 ({threads} threads)", "latency (ms)",
        annotate={r["model"]: f"{r['gflops']:.1f} GFLOPs" for r in rows},
    )
    return rows


#: Deployment goal of the models benchmark: every attention config within this factor of plain YOLOv5 in ONNX
#: Runtime and OpenVINO (paired ratios), and faster than ultralytics' A2C2f peer placed in the same slots.
DEPLOY_RATIO = 1.3


def deployment_goal(rows: Sequence[Mapping[str, Any]], attention: Iterable[str]) -> list[str]:
    """One paragraph: which attention configs meet :data:`DEPLOY_RATIO` in ONNX Runtime and OpenVINO and beat the
    A2C2f peer's latency there.

    Args:
        rows: Rows of :func:`run_models_benchmark`.
        attention: Names of the rows to judge (the attention configs; stock models and peers are not judged).

    Examples:
        >>> rows = [{"model": "yolov5n", "onnx_x": 1.0, "openvino_x": 1.0, "onnx_ms": 50, "openvino_ms": 40},
        ...         {"model": "yolov5n-A2C2f (ultralytics)", "onnx_x": 1.4, "openvino_x": 1.5, "onnx_ms": 70,
        ...          "openvino_ms": 60},
        ...         {"model": "yolov5n-local", "onnx_x": 1.2, "openvino_x": 1.35, "onnx_ms": 60, "openvino_ms": 54}]
        >>> deployment_goal(rows, ["yolov5n-local"])[0].split(": ", 1)[1]
        'met by none; missed by yolov5n-local (OpenVINO 1.35x).'
    """
    peer = next((r for r in rows if "A2C2f" in r["model"]), None)
    names = set(attention)
    judged = [r for r in rows if r["model"] in names and r.get("onnx_x") is not None]
    met, missed = [], []
    for r in judged:
        why = []
        for col, name in (("onnx", "ONNX Runtime"), ("openvino", "OpenVINO")):
            x = r.get(f"{col}_x")
            if x is None or x > DEPLOY_RATIO:
                why.append(f"{name} {x:.2f}x" if x is not None else f"{name} n/a")
            elif peer is not None and peer.get(f"{col}_ms") is not None and r[f"{col}_ms"] >= peer[f"{col}_ms"]:
                why.append(f"{name} not below the A2C2f peer")
        (missed if why else met).append(r["model"] if not why else f"{r['model']} ({', '.join(why)})")
    if not judged:
        return []
    return [f"Goal (every attention config <= {DEPLOY_RATIO}x plain YOLOv5 in ONNX Runtime and OpenVINO, paired "
            f"ratios, and below the A2C2f peer's latency): met by {', '.join(met) or 'none'}; missed by "
            f"{'; '.join(missed) or 'none'}."]
