"""Whole-model cost: parameters, GFLOPs at the real input size, CPU latency (the config gallery's numbers).

GFLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` on one forward pass at the real input
size, so every convolution, linear layer and attention matmul (``scaled_dot_product_attention``, the tiled
``matmul`` paths) is counted once at its true token count. ultralytics' own figure (thop at a small input,
extrapolated by area) misses the attention matmuls, whose cost grows with the square of the token count.
Convention as ultralytics: 1 multiply-add = 2 FLOPs. Elementwise ops (norms, activations, softmax) are not counted.

Latency: batch 1, eval mode, ``fuse()``-d, ``torch.no_grad()``, a fixed number of threads, and models timed
*interleaved* (each repeat runs every model once, in turn) so drift of a shared machine hits all models alike;
the median over repeats is reported.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from ..configs import FAMILIES, family, scaled, stock_config, stock_weights
from .report import torch_threads

__all__ = [
    "build_model",
    "c3tr_peer_config",
    "count_gflops",
    "count_params",
    "gallery",
    "make_sensitive",
    "measure_latency",
    "model_report",
    "stock_transfer",
]


def _hw(imgsz: int | tuple[int, int]) -> tuple[int, int]:
    return (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)


def build_model(cfg: str | Path | dict, scale: str | None = None) -> nn.Module:
    """Build a detection model from a config name, path or dict (scale from the file name, as ultralytics does).

    Args:
        cfg: ``"yolov5n-local.yaml"`` (resolved in yolo_attn's configs), a path, or a model dict.
        scale: Scale letter for a dict without one.

    Returns:
        The ``DetectionModel`` (train mode, CPU).

    Examples:
        >>> build_model("yolov5n-local.yaml").yaml["scale"]
        'n'
    """
    import yolo_attn  # noqa: F401  (registers the blocks)
    from ultralytics.nn.tasks import DetectionModel

    from ..integration import resolve_config

    if isinstance(cfg, Mapping):
        cfg = copy.deepcopy(dict(cfg))
        if scale is not None:
            cfg["scale"] = scale
    else:
        cfg = str(resolve_config(str(cfg)))
    return DetectionModel(cfg, verbose=False)


def c3tr_peer_config(cfg: str = "yolov5n-c3tr.yaml") -> dict:
    """The peer of ``cfg`` with ultralytics' own ``C3TR`` in every ``C3Attn`` slot (comparison only; never shipped).

    Args:
        cfg: A config whose ``C3Attn`` layers use the default (full) attention.

    Returns:
        A model dict (with the scale of ``cfg``) for :func:`build_model`.
    """
    from ultralytics.nn.tasks import yaml_model_load

    from ..integration import resolve_config

    d = copy.deepcopy(yaml_model_load(str(resolve_config(cfg))))
    for section in ("backbone", "head"):
        for layer in d[section]:
            if layer[2] == "C3Attn":
                if len(layer[3]) > 1 and layer[3][1] != "full":
                    raise ValueError(f"C3Attn layer {layer} is not full attention; C3TR has no peer for it")
                layer[2], layer[3] = "C3TR", [layer[3][0]]
    return d


def count_params(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_gflops(model: nn.Module, imgsz: int | tuple[int, int] = 640) -> float:
    """GFLOPs of one batch-1 forward at the real input size, attention matmuls included (1 MAC = 2 FLOPs).

    Args:
        model: Model taking ``[1, 3, H, W]``.
        imgsz: Input size ``S`` or ``(H, W)``.

    Returns:
        GFLOPs.
    """
    from torch.utils.flop_counter import FlopCounterMode

    m = copy.deepcopy(model).eval()
    p = next(m.parameters())
    x = torch.zeros(1, 3, *_hw(imgsz), dtype=p.dtype, device=p.device)
    with FlopCounterMode(display=False) as counter:
        m(x)
    return counter.get_total_flops() / 1e9


def _prepare(model: nn.Module) -> nn.Module:
    m = copy.deepcopy(model).eval()
    return m.fuse(verbose=False) if hasattr(m, "fuse") else m


@torch.no_grad()
def measure_latency(
    models: Mapping[str, nn.Module],
    imgsz: int | tuple[int, int] = 640,
    repeats: int = 15,
    warmup: int = 2,
    threads: int | None = 2,
) -> dict[str, float]:
    """Median CPU latency (ms, batch 1) of several models, timed interleaved; models are fused copies in eval mode.

    Args:
        models: ``{name: model}``.
        imgsz: Input size ``S`` or ``(H, W)``.
        repeats: Timed rounds; each round runs every model once.
        warmup: Untimed rounds first.
        threads: ``torch.set_num_threads`` during the measurement (restored after); ``None`` leaves it.

    Returns:
        ``{name: median milliseconds}``.
    """
    ready = {k: _prepare(m) for k, m in models.items()}
    x = torch.zeros(1, 3, *_hw(imgsz))
    times: dict[str, list[float]] = {k: [] for k in ready}
    with torch_threads(threads):
        for r in range(warmup + repeats):
            for k, m in ready.items():
                t0 = time.perf_counter()
                m(x)
                if r >= warmup:
                    times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def model_report(cfg: str | Path | dict, imgsz: int | tuple[int, int] = 640, latency: bool = True, **kw) -> dict:
    """Parameters, GFLOPs and (optionally) CPU latency of one config.

    Args:
        cfg: Config name, path or dict (see :func:`build_model`).
        imgsz: Input size for GFLOPs and latency.
        latency: Measure latency (the slow part).
        **kw: Passed to :func:`measure_latency`.

    Returns:
        ``dict(params, gflops, latency_ms)`` (``latency_ms`` is None when not measured).

    Examples:
        >>> sorted(model_report("yolov5n-local.yaml", latency=False))
        ['gflops', 'latency_ms', 'params']
    """
    model = build_model(cfg)
    ms = measure_latency({"m": model}, imgsz, **kw)["m"] if latency else None
    return {"params": count_params(model), "gflops": count_gflops(model, imgsz), "latency_ms": ms}


@torch.no_grad()
def make_sensitive(model: nn.Module, imgsz: int = 64, seed: int = 0) -> nn.Module:
    """Make a randomly initialised detector's outputs depend on its input (in place), deterministically.

    A fresh detector's BatchNorms are identities and its class biases very negative, so its decoded outputs barely
    change with the input (measured: 3e-5 px, 4e-11 in the scores) and comparing two models on them proves nothing.
    Here every BatchNorm gets a random affine and running statistics calibrated on a random batch (activations of
    unit scale at every depth), and the class-output biases are zeroed.

    Args:
        model: A detection model (``model.model[-1]`` a ``Detect`` head).
        imgsz: Side of the random calibration batch.
        seed: Seed.

    Returns:
        ``model``, in eval mode.

    Examples:
        >>> m = make_sensitive(build_model("yolov5n.yaml"))
        >>> a, b = (m(torch.rand(1, 3, 64, 64))[0] for _ in range(2))
        >>> bool((a - b).abs().max() > 1)
        True
    """
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.weight.data = torch.rand(m.num_features, generator=gen) + 0.5
        m.bias.data = torch.randn(m.num_features, generator=gen) * 0.1
        m.momentum = 1.0  # running statistics := the calibration batch's
    for branch in getattr(model.model[-1], "cv3", []):
        branch[-1].bias.data.zero_()
    model.train()(torch.rand(2, 3, imgsz, imgsz, generator=gen))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()


@torch.no_grad()
def stock_transfer(model: nn.Module, scale: str, imgsz: int = 128, seed: int = 0, atol: float = 1e-4,
                   stock: str | None = None) -> dict:
    """How the stock checkpoint of a model's family transfers into it, and whether the result predicts what it does.

    A stock model (ultralytics' own config of the family, e.g. ``yolov5{scale}.yaml`` or ``yolo11{scale}.yaml``,
    same ``nc``) with seeded random weights, made input-sensitive by :func:`make_sensitive`, stands in for the
    published checkpoint (``yolov5{scale}u.pt``, ``yolo11{scale}.pt``); it is loaded into a copy of ``model`` through
    :func:`yolo_attn.integration.load_pretrained` (ultralytics' transfer), and both run in eval mode on one seeded
    random input. Deterministic; no timing.

    Args:
        model: A detection model built from a config (left unchanged).
        scale: Scale letter of the stock model to transfer from.
        imgsz: Side of the test input.
        seed: Seed of the stock weights and the input.
        atol: Largest allowed difference of the decoded boxes and scores for ``step0_equal``.
        stock: The stock config (default: the family's, :func:`yolo_attn.configs.stock_config` of the model's
            config name).

    Returns:
        ``dict(transferred, stock_tensors, fraction, step0_equal, max_diff)``: tensors of the stock checkpoint that
        transferred, their total, the fraction, whether the decoded predictions agree within ``atol``, and the largest
        difference.

    Examples:
        >>> r = stock_transfer(build_model("yolov5n-local.yaml"), "n", imgsz=64)
        >>> r["fraction"], r["step0_equal"]
        (1.0, True)
    """
    from ultralytics.nn.tasks import DetectionModel

    from ..integration import load_pretrained

    stock = stock or stock_config(model.yaml.get("yaml_file", "yolov5.yaml"), scale)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        source = DetectionModel(stock, nc=getattr(model, "nc", 80), verbose=False)
    make_sensitive(source, imgsz, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    target = copy.deepcopy(model)
    report = load_pretrained(target, source, f"weights={stock_weights(stock, scale)} (random)", verbose=False)
    x = torch.rand(1, 3, imgsz, imgsz, generator=gen)
    want = source.eval()(x)[0]
    got = target.eval()(x)[0]
    diff = float((got - want).abs().max()) if got.shape == want.shape else float("inf")
    return {"transferred": report.transferred, "stock_tensors": report.n_source, "fraction": report.fraction,
            "step0_equal": diff <= atol, "max_diff": diff}


def gallery(
    configs: Iterable[str],
    scales: Iterable[str] = ("n",),
    latency_scales: Iterable[str] = ("n",),
    imgsz: int = 640,
    extra: Mapping[str, Callable[[str], dict]] | None = None,
    transfer: bool = False,
    **kw,
) -> list[dict]:
    """Rows of the config gallery; all latencies of a scale are measured in one interleaved run.

    Args:
        configs: Unscaled config names (``"yolov5-local.yaml"``; ultralytics' own, e.g. ``"yolo12.yaml"``, too).
        scales: Scales to report params / GFLOPs for.
        latency_scales: Scales whose latency is measured.
        imgsz: Input size.
        extra: ``{row name: scale -> model dict}`` of comparison models, timed with the configs of each scale.
        transfer: Also check the transfer from the family's stock checkpoint (:func:`stock_transfer`; deterministic;
            None for a model of a family without yolo_attn configs).
        **kw: Passed to :func:`measure_latency`.

    Returns:
        One dict per (config, scale): ``config, scale, params, gflops, latency_ms`` (+ ``transfer``).
    """
    rows = []
    for s in scales:
        models = {}
        for c in configs:
            models[Path(c).stem] = build_model(scaled(Path(c).name, s))
        for k, make in (extra or {}).items():
            models[k] = build_model(make(s), scale=s)
        lat = measure_latency(models, imgsz, **kw) if s in latency_scales else {}
        for k, m in models.items():
            has_stock = k in (extra or {}) or family(f"{k}.yaml") in FAMILIES  # yolo12: no checkpoint of ours fits
            rows.append({"config": k, "scale": s, "params": count_params(m), "gflops": count_gflops(m, imgsz),
                         "latency_ms": lat.get(k),
                         **({"transfer": stock_transfer(m, s) if has_stock else None} if transfer else {})})
    return rows
