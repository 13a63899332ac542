"""``yolo-attn info``: a per-layer report of feature-map sizes, token counts and attention cost of a model.

One batch-``B`` forward at the real input size records every top-level layer's output map and, through forward
pre-hooks on the attention modules, each attention call's token count and map size. Attention cost is then counted
per pattern (see :data:`FORMULAS`), so a config can be judged at 640 px before training it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["FORMULAS", "keys_per_query", "model_info", "format_info", "FULL_WARN_TOKENS"]

#: Full attention on more tokens than this gets a warning (40 x 40 = 1600 tokens: a P4 map at 640 px).
FULL_WARN_TOKENS = 1024

FORMULAS = (
    "attention FLOPs per call = 2 * N_q * K * d * heads * 2  (q k^T and weights @ v; 1 multiply-add = 2 FLOPs), "
    "K = keys per query: N (full), min(k,H)*min(k,W) (local), min(k,ceil(H/s))*min(k,ceil(W/s)) (dilated), "
    "min(ws,H)*min(ws,W) (window), H+W-1 (axial), 2k+1 (1-d bands), base K + global keys (global), "
    "N/num_clusters (cluster), 2*block_size (sinkhorn), N/area (area, ultralytics A2C2f), "
    "ceil(H/r)*ceil(W/r) (reduce), num_features (performer), topk*ceil(H/S)*ceil(W/S) (routing); linear attention counts "
    "2 * N * d * d * heads * 2. "
    "Score memory = bytes of attention scores materialised per call: B * heads * N_q * K * 4 (float32), "
    "B * heads * d * d * 4 for linear; full attention is counted dense (N x N) as the unfused path materialises it."
)


def _pattern_of(module: nn.Module) -> tuple[str, dict[str, Any]]:
    """``(pattern, options)`` of an attention module (mask pattern or learned family)."""
    name = type(module).__name__
    if hasattr(module, "pattern_options"):
        return module.pattern, dict(module.pattern_options)
    if name == "GlobalTokenAttention":
        return "global", dict(module.options)
    if name == "ClusterAttention":
        return "cluster", {"num_clusters": module.num_clusters}
    if name == "SinkhornAttention":
        return "sinkhorn", {"block_size": module.block_size}
    if name == "LinearAttention":
        return "linear", {}
    if name == "ReduceAttention":
        return "reduce", {"ratio": module.ratio, "reducer": module.reducer}
    if name == "PerformerAttention":
        return "performer", {"num_features": module.num_features}
    if name == "RoutingAttention":
        return "routing", {"regions": module.regions, "topk": module.topk}
    if isinstance(module, nn.MultiheadAttention):
        return "full", {"impl": "C3TR"}
    if name == "AAttn":
        return "area", {"area": module.area}
    raise TypeError(f"{name} is not an attention module known to yolo-attn info")


def keys_per_query(pattern: str, options: Mapping[str, Any], hw: tuple[int, int], head_dim: int = 0) -> float:
    """Keys each query attends to (``K`` of :data:`FORMULAS`); for ``mixed`` the mean over heads.

    Args:
        pattern: Pattern or family name.
        options: Its options (resolved, as the module holds them).
        hw: Map size ``(H, W)``.
        head_dim: Head width (used for ``linear``, whose "keys" are the ``d x d`` state).

    Returns:
        ``K``.

    Examples:
        >>> keys_per_query("local", {"window": 7}, (80, 80)), keys_per_query("axial", {}, (80, 80))
        (49, 159)
    """
    h, w = hw
    n = h * w
    if pattern == "full":
        return n
    if pattern == "local":
        return min(options["window"], h) * min(options["window"], w)
    if pattern == "dilated":
        k, d = options["window"], options["dilation"]
        return min(k, math.ceil(h / d)) * min(k, math.ceil(w / d))
    if pattern == "window":
        return min(options["window"], h) * min(options["window"], w)
    if pattern == "axial":
        return h + w - 1
    if pattern in ("local1d", "dilated1d"):
        return min(2 * options["window"] + 1, n)
    if pattern == "global":
        base = {k: v for k, v in options.items() if k not in ("base", "global_idx", "num_global_tokens")}
        extra = options.get("num_global_tokens", 0) + len(tuple(options.get("global_idx") or ()))
        return min(keys_per_query(options.get("base", "local"), base, hw) + extra, n + extra)
    if pattern == "mixed":
        from .attention.functional import mixed_groups

        groups = mixed_groups(dict(options))
        total = sum(c for _, _, c in groups)
        return sum(keys_per_query(s.name, sub, hw) * c for s, sub, c in groups) / total
    if pattern == "cluster":
        return math.ceil(n / options["num_clusters"])
    if pattern == "sinkhorn":
        return min(2 * options["block_size"], n)
    if pattern == "linear":
        return head_dim
    if pattern == "area":
        return math.ceil(n / max(options["area"], 1))
    if pattern == "reduce":
        return math.ceil(h / options["ratio"]) * math.ceil(w / options["ratio"])
    if pattern == "performer":
        return options["num_features"]
    if pattern == "routing":
        s = options["regions"]
        return min(options["topk"] * math.ceil(h / s) * math.ceil(w / s), n)
    if pattern == "custom":
        return float(options["mask"].float().sum(1).mean()) if isinstance(options.get("mask"), torch.Tensor) else n
    raise ValueError(f"no key count for pattern {pattern!r}")


def _attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    out = []
    for name, m in model.named_modules():
        try:
            _pattern_of(m)
        except TypeError:
            continue
        if any(name.startswith(p + ".") for p, _ in out):  # an attention module inside another (none today)
            continue
        out.append((name, m))
    return out


def _layer_index(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[1]) if len(parts) > 1 and parts[0] == "model" and parts[1].isdigit() else None


def _call_cost(module: nn.Module, args: tuple, batch: int) -> dict[str, Any]:
    """Cost of one attention call from its captured inputs."""
    pattern, options = _pattern_of(module)
    x = args[0]
    if isinstance(module, nn.MultiheadAttention):  # ultralytics C3TR: [N, B, C], one square map
        n = x.shape[0]
        side = math.isqrt(n)
        hw, heads, d = (side, n // max(side, 1)), module.num_heads, module.head_dim
    elif type(module).__name__ == "AAttn":  # ultralytics A2C2f: NCHW map (our area pattern takes tokens)
        hw, heads, d = tuple(x.shape[-2:]), module.num_heads, module.head_dim
    else:
        hw, heads = tuple(int(v) for v in args[1]), module.num_heads
        d = module.head_dim if hasattr(module, "head_dim") else x.shape[-1] // heads
    n = hw[0] * hw[1]
    n_q = n + (options.get("num_global_tokens", 0) if pattern == "global" else 0)
    k = keys_per_query(pattern, options, hw, d)
    if pattern == "linear":
        flops, scores = 2 * n * d * d * heads * 2, batch * heads * d * d * 4
    else:
        flops, scores = 2 * n_q * k * d * heads * 2, batch * heads * n_q * k * 4
    shown = {k_: v for k_, v in options.items() if k_ not in ("options",) and v not in ((), None)}
    return {"pattern": pattern, "options": shown, "hw": hw, "tokens": n, "heads": heads, "head_dim": d, "keys": k,
            "flops": flops * batch, "score_bytes": scores}


@torch.no_grad()
def model_info(model: str | Path | nn.Module, imgsz: int = 640, batch: int = 1) -> dict[str, Any]:
    """Per-layer feature maps, token counts and attention cost of a model at one input size.

    Args:
        model: Config (``configs/yolov5n-local.yaml`` or a bare name), checkpoint (``.pt``) or a built model.
        imgsz: Square input size.
        batch: Batch size the FLOPs and score memory are given for (the forward itself runs at batch 1).

    Returns:
        ``dict(rows, warnings, imgsz, batch, formulas)``; one row per top-level layer with ``layer, module, from,
        shape (C, H, W), tokens, gain`` (mean |LayerScale gain| of its attention branches: 0 = a no-op, as loaded
        from a stock checkpoint, 1 = the from-scratch start; None without them) and, for attention layers,
        ``pattern, heads, head_dim, keys, calls, attn_gflops, score_mb``.

    Examples:
        >>> info = model_info("yolov5n-local.yaml", imgsz=64)
        >>> [r["tokens"] for r in info["rows"] if r["layer"] == 17]
        [64]
    """
    if isinstance(model, nn.Module):
        net = model
    elif Path(str(model)).suffix in (".pt", ".pth"):
        from .integration import YOLO

        net = YOLO(str(model)).model
    else:
        from .bench.models import build_model

        net = build_model(Path(str(model)).name if not Path(str(model)).is_file() else str(model))
    net = net.float().eval()
    layers = list(net.model)
    shapes: dict[int, tuple] = {}
    calls: dict[int, list[dict]] = {}
    hooks = []
    def record_shape(i: int, out: Any) -> None:  # hooks must return None (a value would replace the output)
        shapes.setdefault(i, tuple(out.shape[1:]) if torch.is_tensor(out) else None)

    for i, layer in enumerate(layers):
        hooks.append(layer.register_forward_hook(lambda m, a, out, i=i: record_shape(i, out)))
    for name, m in _attention_modules(net):
        idx = _layer_index(name)
        hooks.append(m.register_forward_pre_hook(
            lambda mod, args, idx=idx: calls.setdefault(idx, []).append(_call_cost(mod, args, batch))))
    p = next(net.parameters())
    try:
        net(torch.zeros(1, 3, imgsz, imgsz, dtype=p.dtype, device=p.device))
    finally:
        for h in hooks:
            h.remove()
    from .blocks import mean_gain

    rows, warnings = [], []
    for i, layer in enumerate(layers):
        shape = shapes.get(i)
        row = {"layer": i, "module": type(layer).__name__, "from": getattr(layer, "f", -1),
               "shape": "x".join(map(str, shape)) if shape else "-",
               "tokens": shape[1] * shape[2] if shape and len(shape) == 3 else None, "gain": mean_gain(layer)}
        if i in calls:
            c = calls[i]
            first = c[0]
            opts = ", ".join(f"{k}={v}" for k, v in first["options"].items())
            row.update(pattern=first["pattern"] + (f" ({opts})" if opts else ""), attn_hw="x".join(map(str, first["hw"])),
                       attn_tokens=first["tokens"], heads=first["heads"], head_dim=first["head_dim"],
                       keys=first["keys"], calls=len(c), attn_gflops=sum(x["flops"] for x in c) / 1e9,
                       score_mb=max(x["score_bytes"] for x in c) / 2**20)
            if first["pattern"] == "full" and first["tokens"] > FULL_WARN_TOKENS:
                warnings.append(
                    f"layer {i}: full attention on a {row['attn_hw']} map ({first['tokens']} tokens): "
                    f"{first['tokens']}^2 scores per head, {row['score_mb']:.0f} MB per call at batch {batch}, "
                    f"{row['attn_gflops']:.2f} GFLOPs; consider local/window/axial attention here")
        rows.append(row)
    return {"rows": rows, "warnings": warnings, "imgsz": imgsz, "batch": batch, "formulas": FORMULAS}


def format_info(info: Mapping[str, Any]) -> str:
    """The report of :func:`model_info` as text: formula header, table, totals and warnings."""
    from .bench.report import markdown_table

    cols = ["layer", "module", "shape", "tokens", "pattern", "heads", "head_dim", "keys", "calls", "attn_gflops",
            "score_mb", "gain"]
    rows = info["rows"]
    total = sum(r.get("attn_gflops", 0.0) for r in rows)
    peak = max((r.get("score_mb", 0.0) for r in rows), default=0.0)
    lines = [
        f"yolo-attn info: imgsz={info['imgsz']} batch={info['batch']} (shape = C x H x W of each layer's output; "
        "tokens = H*W; gain = mean |LayerScale gain| of the layer's attention: 0 = a no-op, as loaded from a stock "
        "checkpoint, 1 = the from-scratch start)",
        info["formulas"],
        "",
        markdown_table(rows, cols),
        "",
        f"attention total: {total:.3f} GFLOPs at batch {info['batch']}; largest score tensor {peak:.1f} MB",
    ]
    lines += [f"WARNING: {w}" for w in info["warnings"]]
    return "\n".join(lines)
