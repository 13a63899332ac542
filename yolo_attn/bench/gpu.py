"""``yolo-attn bench gpu``: the GPU study in parts; every part appends to ``gpu.csv`` and rewrites ``gpu.md`` / ``.png``.

- ``kernels``: every attention pattern at 40x40, 80x80, 120x120 maps, bf16, batch 32, 2 heads x 32, forward and
  forward + backward: our tiled path, compiled FlexAttention (same mask predicates; compile time apart), SDPA with
  the boolean mask, full SDPA (flash), and NATTEN's ``na2d`` for local / dilated where ``import natten`` works.
  Contenders run interleaved; the winner per pattern (tiled vs flex) is printed for the backend table of
  :mod:`yolo_attn.attention.flex`.
- ``train``: training throughput (images/s) of yolov5s, yolov5s-local / -c3tr / -window / -mixed and ultralytics'
  C3TR / A2C2f spliced into YOLOv5s: AMP, batch 64 at 640, steady state after warm-up
  (:class:`yolo_attn.bench.training.TrainLoop`: the detection loss on a synthetic batch, GradScaler, SGD; no data
  loading, no EMA).
- ``infer``: latency at batch 1 and 32 in fp16, PyTorch, and a TensorRT engine exported by yolo_attn's export
  workflow where ``import tensorrt`` works (its parity is printed); otherwise the reason is recorded.
- ``amp`` (not part of ``all``): AMP training end to end with ``yolo-attn train`` (training and half-precision
  validation) for every shipped config (3 epochs) and yolov5n-local 30 epochs AMP vs fp32, 2 seeds each, launched
  concurrently as subprocesses.

Every part takes a ``device``; the command line always uses CUDA and refuses to run without it. Tests call the
parts on CPU at tiny sizes. Time budgets per part keep each under 8 minutes on an H100: cases left when the budget
is spent are recorded as skipped.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .gpu_report import strip_paths, write_gpu_report

__all__ = ["PARTS", "run_gpu_benchmark", "kernels", "train", "infer", "amp", "natten_status", "tensorrt_status"]

PARTS = ("kernels", "train", "infer")
EXTRA_PARTS = ("amp",)
KERNEL_SIDES = (80, 40, 120)  # 80x80 first: the goals are stated there
TRAIN_MODELS = ("yolov5s", "yolov5s-local", "yolov5s-c3tr", "yolov5s-window", "yolov5s-mixed",
                "yolov5s-C3TR (ultralytics)", "yolov5s-A2C2f (ultralytics)")
QUICK = {"kernels": {"sides": (80,), "patterns": ("full", "local", "window"), "repeats": 5},
         "train": {"models": ("yolov5s", "yolov5s-local"), "steps": 6, "warmup": 3},
         "infer": {"models": ("yolov5s", "yolov5s-local"), "repeats": 10, "tensorrt": False}}
PART_BUDGET_S = 420.0

Log = Callable[[str], None]


# ---------------------------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_ms(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall time of one call in ms (CUDA events on CUDA)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Time ``fns`` in rounds (A B C, A B C, ...): ``{name: [ms per round]}`` (callers warm them up first)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(_time_ms(fn, device))
    return times


def _peak_mb(fn: Callable[[], Any], device: torch.device) -> float | None:
    """Peak memory of one call beyond what was allocated before it (CUDA allocator; CPU: live op outputs)."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from .attention import peak_bytes

    return peak_bytes(fn) / 2**20


def _error(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
    return strip_paths(f"{type(err).__name__}: {text}")


# --------------------------------------------------------------------------------------------------------- kernels
def natten_status() -> tuple[Any, str]:
    """``(natten module or None, note)``: whether NATTEN's ``na2d`` can be used here, and why not."""
    try:
        import natten
    except Exception as err:  # noqa: BLE001  (ImportError, or a broken build raising anything at import)
        return None, f"natten not importable ({_error(err)}); install: pip install --no-deps --no-build-isolation natten"
    return natten, f"natten {getattr(natten, '__version__', '?')}"


def _contenders(pattern: str, options: dict, hw: tuple[int, int], q, k, v, natten) -> dict[str, tuple]:
    """name -> ``(forward () -> Tensor, its leaf inputs)`` for one pattern on ``[B, heads, N, d]`` inputs."""
    from ..attention import attend, pattern_mask, use_cuda_backend
    from ..attention.flex import FLEX_PATTERNS, flex_attend
    from ..attention.functional import PATTERNS
    from ..attention.options import resolve

    def ours(backend: str) -> Callable:
        def run():
            with use_cuda_backend(backend):
                return attend(q, k, v, pattern, hw=hw, **options)
        return run

    qkv = (q, k, v)
    out = {"tiled": (ours("tiled"), qkv)}
    if q.is_cuda:
        out["flex"] = (ours("flex"), qkv)
    elif pattern in FLEX_PATTERNS:  # CPU (tests): eager flex; forward only (it refuses inputs that require grad)
        resolved = resolve(PATTERNS, pattern, options)[1]
        out["flex"] = (lambda: flex_attend(*(t if torch.is_grad_enabled() else t.detach() for t in qkv), pattern,
                                           hw, resolved, compile=False), qkv)
    if pattern == "full":
        out["SDPA (flash)"] = (lambda: F.scaled_dot_product_attention(q, k, v), qkv)
    else:
        mask = pattern_mask(pattern, hw, **options).to(q.device)
        out["SDPA + bool mask"] = (lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), qkv)
    if natten is not None and pattern in ("local", "dilated"):
        layout = [t.detach().transpose(1, 2).unflatten(1, hw).contiguous().requires_grad_() for t in qkv]
        window, dilation = options["window"], options.get("dilation", 1)
        kwargs = {"torch_compile": True} if q.is_cuda else {}
        out["NATTEN"] = (lambda: natten.na2d(*layout, kernel_size=window, dilation=dilation, **kwargs), layout)
    return out


def _fwd_bwd(fn: Callable, inputs: Sequence[torch.Tensor], grad: torch.Tensor) -> Callable:
    """Forward + backward to the leaf inputs (``grad`` reshaped to the output: same element count)."""
    def run():
        out = fn()
        torch.autograd.grad(out, list(inputs), grad.reshape(out.shape))
    return run


def kernels(
    device: str | torch.device = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    batch: int = 32,
    sides: Iterable[int] = KERNEL_SIDES,
    patterns: Iterable[str] | None = None,
    heads: int = 2,
    head_dim: int = 32,
    repeats: int = 10,
    budget_s: float = PART_BUDGET_S,
    log: Log = print,
) -> list[dict]:
    """Attention kernels: every pattern x size x mode (fwd, fwd+bwd) x contender; rows for the report.

    Args:
        device: Device of the inputs.
        dtype: Input dtype.
        batch: Batch size.
        sides: Square map sides.
        patterns: Names of :data:`yolo_attn.bench.attention.DEFAULT_OPTIONS` (default: all; ``swin`` = shifted).
        heads: Attention heads.
        head_dim: Channels per head.
        repeats: Interleaved timing rounds.
        budget_s: Stop starting new cases after this many seconds (the rest are recorded as skipped).
        log: Progress printer.

    Returns:
        One row per (pattern, size, mode, contender).
    """
    from .attention import DEFAULT_OPTIONS

    device = torch.device(device)
    natten, natten_note = natten_status()
    log(f"kernels: {natten_note}")
    names = list(patterns or DEFAULT_OPTIONS)
    rows, start = [], time.perf_counter()
    for side in sides:
        hw, n = (side, side), side * side
        gen = torch.Generator().manual_seed(side)
        q, k, v = (torch.randn(batch, heads, n, head_dim, generator=gen).to(device, dtype).requires_grad_()
                   for _ in range(3))
        grad = torch.randn(batch, heads, n, head_dim, generator=gen).to(device, dtype)
        for name in names:
            pattern, options = ("window" if name == "swin" else name), dict(DEFAULT_OPTIONS[name])
            case = f"{name} {side}x{side}"
            if time.perf_counter() - start > budget_s:
                rows.append({"case": case, "contender": "-", "note": f"skipped: part budget {budget_s:.0f} s spent"})
                continue
            fns = _contenders(pattern, options, hw, q, k, v, natten)
            for mode in ("fwd", "fwd+bwd"):
                rows += _kernel_case(case, mode, fns, grad, repeats, device, log)
            if "NATTEN" in fns:
                rows.append(_natten_parity(case, fns, device))
    for row in rows:
        row.update(part="kernels", dtype=str(dtype).removeprefix("torch."), batch=batch,
                   size=row.get("size") or str(row["case"]).rsplit(" ", 1)[-1])
    rows.append({"part": "kernels", "case": "natten", "contender": "NATTEN", "note": natten_note})
    return rows


def _kernel_case(case, mode, fns, grad, repeats, device, log) -> list[dict]:
    runs, rows, first = {}, [], {}
    for name, (fn, leaves) in fns.items():
        call = _fwd_bwd(fn, leaves, grad) if mode == "fwd+bwd" else fn
        try:
            with torch.no_grad() if mode == "fwd" else contextlib.nullcontext():
                first[name] = _time_ms(call, device)  # includes compilation (flex, NATTEN's compiled backend)
                call()
            runs[name] = call
        except Exception as err:  # noqa: BLE001  (OOM, unsupported backend: recorded, the study goes on)
            rows.append({"case": case, "mode": mode, "contender": name, "note": _error(err)})
            if device.type == "cuda":
                torch.cuda.empty_cache()
    with torch.no_grad() if mode == "fwd" else contextlib.nullcontext():
        times = interleaved(runs, repeats, device)
        peaks = {}
        for name, call in runs.items():
            try:
                peaks[name] = _peak_mb(call, device)
            except Exception:  # noqa: BLE001  (memory tracking is best effort)
                peaks[name] = None
    tiled = statistics.median(times["tiled"]) if times.get("tiled") else None
    for name, t in times.items():
        ms = statistics.median(t)
        compile_s = max(first[name] - ms, 0.0) / 1e3 if name in ("flex", "NATTEN") else None
        rows.append({"case": case, "mode": mode, "contender": name, "median_ms": ms,
                     "vs_tiled": ms / tiled if tiled else None, "peak_MB": peaks.get(name), "compile_s": compile_s})
        log(f"  {case:14s} {mode:8s} {name:18s} {ms:9.3f} ms" + (f"  (compile {compile_s:.1f} s)" if compile_s else ""))
    return rows


def _natten_parity(case: str, fns: dict[str, Callable], device: torch.device) -> dict:
    """Max |NATTEN - ours| on the same inputs (NATTEN's layout converted back)."""
    try:
        with torch.no_grad():
            ours, theirs = fns["tiled"][0](), fns["NATTEN"][0]()
            diff = (theirs.flatten(1, 2).transpose(1, 2).float() - ours.float()).abs().max()
        return {"case": case, "mode": "parity", "contender": "NATTEN", "value": float(diff),
                "note": "max |NATTEN - tiled| on the same inputs"}
    except Exception as err:  # noqa: BLE001
        return {"case": case, "mode": "parity", "contender": "NATTEN", "note": _error(err)}


# ----------------------------------------------------------------------------------------------------------- train
def _model_cfg(name: str) -> str | dict:
    """A train / infer model name -> config name or model dict (ultralytics' peers, see :mod:`.peers`)."""
    from .peers import peer_configs

    scale = name[len("yolov5")]
    peers = peer_configs(scale)
    return peers[name] if name in peers else f"{name}.yaml"


def _build(name: str) -> torch.nn.Module:
    from .models import build_model

    cfg = _model_cfg(name)
    return build_model(cfg, scale=name[len("yolov5")] if isinstance(cfg, dict) else None)


def train(
    device: str | torch.device = "cuda",
    models: Iterable[str] = TRAIN_MODELS,
    batch: int = 64,
    imgsz: int = 640,
    warmup: int = 5,
    steps: int = 15,
    rounds: int = 3,
    amp: bool = True,
    budget_s: float = PART_BUDGET_S,
    log: Log = print,
) -> list[dict]:
    """Training throughput: steady-state images/s of each model, AMP, models interleaved round by round.

    Args:
        device: Device to train on.
        models: Model names (``yolov5s-local`` -> ``yolov5s-local.yaml``; the two ultralytics peers by row name).
        batch: Batch size.
        imgsz: Square image size.
        warmup: Untimed steps per model first (cuDNN autotuning, allocator, plan caches).
        steps: Timed steps per model (split over ``rounds``).
        rounds: Interleaved rounds; the median round is reported.
        amp: Autocast float16 with a GradScaler (CUDA); off on CPU.
        budget_s: Models not started within this many seconds are recorded as skipped.
        log: Progress printer.

    Returns:
        One row per model: ``images_per_s``, ``median_ms`` per step, ``peak_MB``.
    """
    from .training import TrainLoop, synthetic_batch

    device = torch.device(device)
    dtype = torch.float16 if amp and device.type == "cuda" else None
    loops, rows, batches, peaks, start = {}, [], {}, {}, time.perf_counter()
    for name in models:
        if time.perf_counter() - start > budget_s:
            rows.append({"case": name, "note": f"skipped: part budget {budget_s:.0f} s spent"})
            continue
        try:
            loop = TrainLoop(_build(name), device, amp=dtype)
            batches[name] = synthetic_batch(batch, imgsz, nc=loop.model.model[-1].nc, device=device)
            loop.run(batches[name], warmup)
            if device.type == "cuda":  # (CPU: the op-level tracker would cost more than the step)
                peaks[name] = _peak_mb(lambda loop=loop, b=batches[name]: loop.step(b), device)
            loops[name] = loop
        except Exception as err:  # noqa: BLE001  (OOM, a peer that does not build: recorded)
            rows.append({"case": name, "note": _error(err)})
            if device.type == "cuda":
                torch.cuda.empty_cache()
    per_round = max(1, steps // rounds)
    fns = {name: (lambda loop=loop, b=batches[name]: [loop.step(b) for _ in range(per_round)])
           for name, loop in loops.items()}
    times = interleaved(fns, rounds, device)
    for name, t in times.items():
        step_ms = statistics.median(t) / per_round
        rows.append({"case": name, "median_ms": step_ms, "images_per_s": batch * 1e3 / step_ms,
                     "peak_MB": peaks.get(name)})
        log(f"  train {name:30s} {batch * 1e3 / step_ms:9.1f} images/s")
    for row in rows:
        row.update(part="train", batch=batch, size=str(imgsz), dtype="amp fp16" if dtype else "fp32",
                   contender="TrainLoop")
    return rows


# ----------------------------------------------------------------------------------------------------------- infer
def tensorrt_status() -> tuple[Any, str]:
    """``(tensorrt module or None, note)``."""
    try:
        import tensorrt
    except Exception as err:  # noqa: BLE001
        return None, f"tensorrt not importable ({_error(err)})"
    return tensorrt, f"tensorrt {getattr(tensorrt, '__version__', '?')}"


def infer(
    device: str | torch.device = "cuda",
    models: Iterable[str] = TRAIN_MODELS,
    imgsz: int = 640,
    batches: Iterable[int] = (1, 32),
    repeats: int = 30,
    half: bool = True,
    tensorrt: bool = True,
    trt_models: Iterable[str] = ("yolov5s", "yolov5s-local"),
    work_dir: str | Path | None = None,
    budget_s: float = PART_BUDGET_S,
    log: Log = print,
) -> list[dict]:
    """Inference latency of fused models (PyTorch; TensorRT engines where ``import tensorrt`` works).

    Args:
        device: Device.
        models: Model names as for :func:`train`.
        imgsz: Square input size.
        batches: Batch sizes.
        repeats: Interleaved timing rounds per batch size.
        half: fp16 weights and inputs (CUDA); fp32 otherwise.
        tensorrt: Also export and time TensorRT engines of ``trt_models`` (CUDA only).
        trt_models: Models exported to TensorRT (each engine build takes minutes).
        work_dir: Where checkpoints and engines are written (default: a temporary directory).
        budget_s: TensorRT builds not started within this many seconds are skipped.
        log: Progress printer.

    Returns:
        One row per (model, runtime, batch).
    """
    from .models import _prepare

    device = torch.device(device)
    half = half and device.type == "cuda"
    dtype = torch.float16 if half else torch.float32
    start, rows, nets = time.perf_counter(), [], {}
    for name in models:
        try:
            nets[name] = _prepare(_build(name)).to(device, dtype)
        except Exception as err:  # noqa: BLE001
            rows.append({"case": name, "contender": "PyTorch", "note": _error(err)})
    with torch.no_grad():
        for b in batches:
            x = torch.rand(b, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(b)).to(device, dtype)
            fns = {name: (lambda m=m, x=x: m(x)) for name, m in nets.items()}
            for fn in fns.values():
                fn()
                fn()
            for name, t in interleaved(fns, repeats, device).items():
                ms = statistics.median(t)
                rows.append({"case": name, "contender": "PyTorch", "batch": b, "median_ms": ms})
                log(f"  infer {name:30s} batch {b:3d} {ms:9.3f} ms")
    if tensorrt:
        rows += _tensorrt_rows(device, [m for m in trt_models if m in nets], nets, imgsz, batches, repeats, half,
                               work_dir, start, budget_s, log)
    for row in rows:
        row.update(part="infer", size=str(imgsz), dtype=str(dtype).removeprefix("torch."))
    return rows


def _tensorrt_rows(device, names, nets, imgsz, batches, repeats, half, work_dir, start, budget_s, log) -> list[dict]:
    trt, note = tensorrt_status()
    if device.type != "cuda" or trt is None:
        note = note if trt is None else "TensorRT needs CUDA"
        log(f"  TensorRT: {note}")
        return [{"case": "tensorrt", "contender": "TensorRT", "note": note}]
    import tempfile

    from ultralytics.nn.autobackend import AutoBackend

    from ..integration import YOLO
    from ..workflows import export

    rows = []
    with tempfile.TemporaryDirectory(prefix="yolo_attn_trt_") as tmp:
        folder = Path(work_dir or tmp)
        for name in names:
            for b in batches:
                if time.perf_counter() - start > budget_s:
                    rows.append({"case": name, "contender": "TensorRT", "batch": b, "note": "skipped: budget spent"})
                    continue
                try:
                    ckpt = folder / f"{name}-b{b}.pt"
                    yolo = YOLO(f"{name}.yaml") if not isinstance(_model_cfg(name), dict) else None
                    if yolo is None:
                        raise ValueError("peer models are not exported")
                    yolo.save(str(ckpt))
                    engine, _ = export(str(ckpt), "engine", parity=False, imgsz=imgsz, half=half, batch=b,
                                       device=device.index or 0)
                    backend = AutoBackend(str(engine), device=device, fp16=half)
                    x = torch.rand(b, 3, imgsz, imgsz, device=device, dtype=torch.float16 if half else torch.float32)
                    ref_model = YOLO(str(ckpt)).model.to(device).eval()
                    ref_model = ref_model.half() if half else ref_model
                    with torch.no_grad():
                        ref, got = ref_model(x)[0].float(), backend(x)
                    got = (got[0] if isinstance(got, (list, tuple)) else got).float()
                    parity = float((got - ref).abs().max())
                    t = interleaved({"trt": lambda: backend(x)}, repeats, device)["trt"]
                    rows.append({"case": name, "contender": "TensorRT", "batch": b, "median_ms": statistics.median(t),
                                 "value": parity, "note": f"{note}; parity = max |engine - PyTorch fp16|"})
                    log(f"  TensorRT {name} batch {b}: {statistics.median(t):.3f} ms, parity {parity:.3g}")
                except Exception as err:  # noqa: BLE001
                    rows.append({"case": name, "contender": "TensorRT", "batch": b, "note": _error(err)})
    return rows


# ------------------------------------------------------------------------------------------------------------- amp
def amp(
    device: str = "0",
    configs: Iterable[str] | None = None,
    epochs: int = 3,
    long_config: str = "yolov5n-local.yaml",
    long_epochs: int = 30,
    seeds: Iterable[int] = (0, 1),
    data: str | Path | None = None,
    imgsz: int = 320,
    batch: int = 32,
    workers: int = 2,
    project: str | Path = "runs/bench-gpu-amp",
    timeout_s: float = 900.0,
    log: Log = print,
) -> list[dict]:
    """AMP training end to end: ``yolo-attn train`` subprocesses, all launched at once, then collected.

    Runs: every config for ``epochs`` (AMP on, as ``yolo-attn train device=0`` does by default; ultralytics
    validates in half precision on CUDA), and ``long_config`` for ``long_epochs`` with AMP and with ``amp=False``
    for each seed. Each run's row: final mAP50-95 (``value``), wall time, and ok / the last error line.

    Args:
        device: ``device=`` of the runs (``"0"``; ``"cpu"`` in tests).
        configs: Config names (default: every shipped config at scale n).
        epochs: Epochs of the per-config runs.
        long_config: Config of the AMP-vs-fp32 comparison.
        long_epochs: Epochs of that comparison (0: skip it).
        seeds: Seeds of the comparison.
        data: Data YAML (default: the bundled shapes dataset, generated here once before the runs start).
        imgsz: Image size.
        batch: Batch size.
        workers: Dataloader workers per run.
        project: Output folder of the runs.
        timeout_s: Runs still going after this many seconds are stopped and reported.
        log: Progress printer.

    Returns:
        One row per run.
    """
    import csv

    from ..workflows import resolve_data
    from ..configs import scaled
    from .peers import default_configs

    data = resolve_data(data)  # generate once, before the concurrent runs
    configs = list(configs) if configs is not None else [scaled(c, "n") for c in default_configs()]
    runs = [(cfg, "amp", 0, epochs, True) for cfg in configs]
    if long_epochs:
        runs += [(long_config, mode, seed, long_epochs, mode == "amp") for seed in seeds for mode in ("amp", "fp32")]
    project = Path(project).resolve()
    procs = []
    for cfg, mode, seed, ep, use_amp in runs:
        name = f"{Path(cfg).stem}-{mode}-e{ep}-s{seed}"
        cmd = [sys.executable, "-m", "yolo_attn", "train", f"model={cfg}", f"data={data}", f"device={device}",
               f"epochs={ep}", f"imgsz={imgsz}", f"batch={batch}", f"workers={workers}", f"seed={seed}",
               f"amp={use_amp}", f"project={project}", f"name={name}", "exist_ok=True", "plots=False"]
        procs.append((cfg, mode, seed, ep, name, time.perf_counter(),
                      subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)))
    log(f"amp: {len(procs)} training runs started")
    rows = []
    for cfg, mode, seed, ep, name, t0, proc in procs:
        try:
            _, err = proc.communicate(timeout=max(1.0, timeout_s - (time.perf_counter() - t0)))
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            err = f"timeout after {timeout_s:.0f} s"
        wall = time.perf_counter() - t0
        results = project / name / "results.csv"
        value, note = None, "ok"
        if proc.returncode == 0 and results.is_file():
            with results.open() as f:
                last = list(csv.DictReader(f))[-1]
            value = float(next(v for k, v in last.items() if k.strip() == "metrics/mAP50-95(B)"))
        else:
            lines = [line for line in (err or "").strip().splitlines() if line.strip()]
            note = f"exit {proc.returncode}: {lines[-1][:200] if lines else 'no output'}"
        rows.append({"part": "amp", "case": f"{Path(cfg).stem} {ep} epochs seed {seed}", "contender": mode,
                     "value": value, "median_ms": wall * 1e3, "size": str(imgsz), "batch": batch,
                     "dtype": "amp fp16" if mode == "amp" else "fp32", "note": strip_paths(note)})
        log(f"  amp {name}: {note}" + (f", mAP50-95 {value:.4f}" if value is not None else ""))
    return rows


# ------------------------------------------------------------------------------------------------------------- run
def run_gpu_benchmark(
    part: str = "all",
    quick: bool = False,
    out_dir: str | Path = "benchmarks",
    command: str = "",
    device: str | torch.device = "cuda",
    options: dict[str, dict] | None = None,
    log: Log = print,
) -> list[dict]:
    """Run one part (or ``all`` = kernels, train, infer) and write the report after each part.

    Args:
        part: ``kernels``, ``train``, ``infer``, ``all`` or ``amp``.
        quick: The ``quick`` subset (minutes).
        out_dir: Where ``gpu.csv``, ``gpu.md`` and ``gpu.png`` are written.
        command: Command line recorded in the report.
        device: CUDA device (tests pass ``"cpu"``; the command line never does).
        options: Per-part keyword arguments over the defaults / the quick subset, e.g.
            ``{"kernels": {"sides": (8,), "batch": 1}}`` (tests: tiny sizes).
        log: Progress printer.

    Returns:
        The new rows of every part run.
    """
    parts = PARTS if part == "all" else (part,)
    unknown = [p for p in parts if p not in PARTS + EXTRA_PARTS]
    if unknown:
        raise ValueError(f"part={part!r} is not one of {', '.join((*PARTS, 'all', *EXTRA_PARTS))}")
    from .report import machine_info

    info = machine_info()
    run = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    everything = []
    for name in parts:
        kwargs = {**(QUICK.get(name, {}) if quick else {}), **(options or {}).get(name, {})}
        log(f"bench gpu: part {name}{' (quick)' if quick else ''}")
        t0 = time.perf_counter()
        if name == "amp":
            cuda = torch.device(device).type == "cuda"
            rows = amp(**{"device": str(torch.device(device).index or 0) if cuda else "cpu", "log": log,
                          **({"long_epochs": 0} if quick else {}), **kwargs})
        else:
            rows = {"kernels": kernels, "train": train, "infer": infer}[name](device=device, log=log, **kwargs)
        for row in rows:
            row.update(run=run, gpu=info["gpu"], torch=info["torch"], command=command)
        write_gpu_report(rows, out_dir)
        log(f"bench gpu: part {name} took {time.perf_counter() - t0:.0f} s")
        everything += rows
        if name == "kernels":
            _print_winners(rows, log)
    return everything


def _print_winners(rows: list[dict], log: Log) -> None:
    from .gpu_report import kernel_winners

    for pattern, per_size in kernel_winners(rows).items():
        log(f"  CUDA backend for {pattern}: " + ", ".join(f"{size} {w}" for size, w in per_size.items()))
