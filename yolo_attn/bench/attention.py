"""Side-by-side CPU benchmark of the attention patterns against dense masked baselines.

Contenders at each map size run interleaved (A B C ... A B C ...) so that load from other processes hits all of
them alike; the table reports the median time per contender and the median of the per-round time ratios. Peak
memory is the largest total of live bytes of op outputs during one call, tracked with a ``TorchDispatchMode``
(every op output storage counts from its creation until its tensor is freed); precomputed masks / index plans are
reported apart as "cached". Compiled FlexAttention runs inside one fused kernel the dispatch mode cannot see, so
its memory is not reported.
"""

from __future__ import annotations

import math
import os
import statistics
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from yolo_attn.attention import (
    attend,
    cluster_attention,
    linear_attention,
    pattern_mask,
    performer_attention,
    reduce_attention,
    routing_attention,
    sinkhorn_attention,
)
from yolo_attn.attention.cluster import lsh_route
from yolo_attn.attention.performer import orthogonal_features

from .report import header_notes, torch_threads, write_csv
from .report import progress as progress_bar

__all__ = ["run_attention_benchmark", "peak_bytes"]

DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "full": {}, "local": {"window": 7}, "dilated": {"window": 7, "dilation": 2}, "window": {"window": 7},
    "swin": {"window": 7, "shift": True}, "axial": {}, "local1d": {"window": 24},
    "global": {"window": 7, "global_idx": [0]}, "mixed": {"heads": {"local": 1, "dilated": 1}, "window": 7},
    "area": {"area": 4},
}

#: Learned-pattern families, benchmarked through their functional cores (routing / sorting inputs drawn at random,
#: as a trained layer would produce them); 64 tokens per cluster / block; reduce r = 4 (pooled keys), performer
#: 64 features, routing 8x8 regions, top 4.
LEARNED = ("cluster", "sinkhorn", "linear", "reduce", "performer", "routing")
LEARNED_OPTIONS = {"reduce": {"ratio": 4}, "performer": {"num_features": 64}, "routing": {"regions": 8, "topk": 4}}

#: Side-by-side rows with ultralytics' YOLO12 area attention, added with ``area`` (modules on a ``[1, 64, H, W]``
#: map, 2 heads x 32 for the attention modules; the blocks as A2C2f builds them: 32 hidden channels, 1 head, 2 layers).
AREA_PEERS = (
    "area module: ours, Attention (qkv + proj, 2x32)",
    "area module: ultralytics AAttn (qkv + proj + 7x7 pe, 2x32)",
    "area block: ours, C3Attn(64, 64, n=2, area 4, 1 head)",
    "area block: ultralytics A2C2f(64, 64, area=4)",
)


def _learned_fn(name: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: tuple[int, int]) -> Callable[[], Any]:
    n, per, opts = q.shape[2], 64, LEARNED_OPTIONS.get(name, {})
    if name == "reduce":
        return lambda: reduce_attention(q, k, v, hw, **opts)
    if name == "performer":
        projection = orthogonal_features(opts["num_features"], q.shape[-1], torch.Generator().manual_seed(0))
        return lambda: performer_attention(q, k, v, projection.to(q.device))
    if name == "routing":
        return lambda: routing_attention(q, k, v, hw, **opts)[0]
    if name == "cluster":
        num_clusters = max(1, n // per)
        rotations = torch.randn(q.shape[1], q.shape[-1], max(1, num_clusters // 2), device=q.device)
        ids = lsh_route(q + k, rotations) % num_clusters
        return lambda: cluster_attention(q, k, v, ids, num_clusters)
    if name == "sinkhorn":
        blocks = -(-n // per)
        log_p = torch.randn(q.shape[0], q.shape[1], blocks, blocks, device=q.device).log_softmax(-1)
        return lambda: sinkhorn_attention(q, k, v, log_p, per)[0]
    return lambda: linear_attention(q, k, v)


class _LiveBytes(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.owned: set[int] = set()

    def _free(self, ptr: int, nbytes: int) -> None:
        self.owned.discard(ptr)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in self.owned:
                ptr, nbytes = t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()
                self.owned.add(ptr)
                self.live += nbytes
                weakref.finalize(t, self._free, ptr, nbytes)
        self.peak = max(self.peak, self.live)
        return out


def peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak bytes of live op outputs while running ``fn()`` (inputs and cached tensors excluded).

    Args:
        fn: Zero-argument callable to measure.

    Returns:
        Peak live bytes.

    Examples:
        >>> peak_bytes(lambda: torch.ones(1000) * 2) >= 4000
        True
    """
    with _LiveBytes() as mode:
        fn()
    return mode.peak


def _contenders(hw: tuple[int, int], patterns: Iterable[str], q, k, v, flex: bool, log) -> dict[str, dict]:
    """name -> {"fn", "cached" bytes, "note"} for one map size."""
    out: dict[str, dict] = {}
    for name in patterns:
        if name in LEARNED:
            out[name] = {"fn": _learned_fn(name, q, k, v, hw), "cached": 0, "note": "functional core"}
            continue
        pattern = "window" if name == "swin" else name
        options = DEFAULT_OPTIONS.get(name, {})
        out[name] = {"fn": lambda p=pattern, o=options: attend(q, k, v, p, hw=hw, **o), "cached": 0, "note": ""}
    local = pattern_mask("local", hw, window=7).to(q.device)
    out["local: SDPA + bool mask"] = {
        "fn": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=local), "cached": local.numel(), "note": "",
    }
    if flex:
        out["local: FlexAttention"] = _flex_contender(local, q, k, v, log)
    if "area" in patterns:
        out.update(_area_peers(hw, q.device))
    return out


def _area_peers(hw: tuple[int, int], device: str | torch.device) -> dict[str, dict]:
    """Our area attention next to ultralytics' YOLO12 ``AAttn`` / ``A2C2f`` on one ``[1, 64, H, W]`` map."""
    from ultralytics.nn.modules.block import A2C2f, AAttn

    from yolo_attn.attention import Attention
    from yolo_attn.blocks import C3Attn

    x = torch.randn(1, 64, *hw, device=device)
    tokens = x.flatten(2).transpose(1, 2)
    ours = Attention(64, 2, pattern="area", area=4).to(device).eval()
    modules = {
        AREA_PEERS[0]: lambda: ours(tokens, hw),
        AREA_PEERS[1]: AAttn(64, 2, area=4).to(device).eval(),
        AREA_PEERS[2]: C3Attn(64, 64, 2, "area", {"area": 4, "heads": 1}).to(device).eval(),
        AREA_PEERS[3]: A2C2f(64, 64, 1, True, 4).to(device).eval(),
    }
    return {name: {"fn": (lambda m=m: m(x)) if isinstance(m, torch.nn.Module) else m, "cached": 0,
                   "note": "module on a [1, 64, H, W] map (with projections)"} for name, m in modules.items()}


def _flex_contender(mask: torch.Tensor, q, k, v, log) -> dict:
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        n = mask.shape[0]
        block = create_block_mask(lambda b, h, qi, ki: mask[qi, ki], None, None, n, n, device=q.device)
        torch._dynamo.reset()  # compile for this size from scratch: no shape-generic kernel reused across sizes
        compiled = torch.compile(flex_attention)
        start = time.perf_counter()
        with torch._inductor.config.patch(force_disable_caches=True):  # a cold compile, not a disk-cache hit
            compiled(q, k, v, block_mask=block)
        compile_s = time.perf_counter() - start
        log(f"  FlexAttention compiled in {compile_s:.1f} s")
        return {"fn": lambda: compiled(q, k, v, block_mask=block), "cached": mask.numel(),
                "note": f"compile {compile_s:.1f} s; memory not visible to dispatch tracking", "no_mem": True}
    except Exception as exc:  # report, do not crash: the CPU inductor path needs a working C++ toolchain
        log(f"  FlexAttention unavailable: {type(exc).__name__}: {exc}")
        return {"fn": None, "cached": 0, "note": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}


def _time_interleaved(contenders: dict[str, dict], repeats: int, desc: str, bar: bool) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name, c in contenders.items() if c["fn"] is not None}
    for name in times:  # warm-up: builds and caches plans
        contenders[name]["fn"]()
    for _ in progress_bar(range(repeats), desc) if bar else range(repeats):
        for name in times:
            start = time.perf_counter()
            contenders[name]["fn"]()
            times[name].append(time.perf_counter() - start)
    return times


def _ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def run_attention_benchmark(
    sizes: Iterable[int] = (400, 1600, 6400, 14400),
    patterns: Iterable[str] | str = (*DEFAULT_OPTIONS, *LEARNED),
    repeats: int = 7,
    out_dir: str | Path = "benchmarks",
    progress: bool = True,
    flex: bool = True,
    device: str = "cpu",
) -> list[dict]:
    """Benchmark every pattern on square maps of ``N`` tokens (fp32, batch 1, 2 heads x 32, 2 threads).

    Args:
        sizes: Token counts ``N``; each must be a perfect square (map ``sqrt(N) x sqrt(N)``).
        patterns: Pattern names or a comma-separated string (``swin`` = shifted windows); ``local`` is also run as
            SDPA with its boolean mask and as compiled FlexAttention with the same mask; ``area`` adds the
            :data:`AREA_PEERS` rows (ours against ultralytics' ``AAttn`` and ``A2C2f``).
        repeats: Interleaved rounds per size (the median is reported).
        out_dir: Where ``attention.csv``, ``attention.md`` and ``attention.png`` are written.
        progress: Print progress lines and a progress bar over the timing rounds.
        flex: Include FlexAttention (``torch.compile``; slow to compile on CPU).
        device: Torch device of the inputs (the targets are stated for ``"cpu"``).

    Returns:
        One dict per (size, contender): ``side, N, contender, median_ms, vs_full, peak_MB, cached_MB, note``.

    Examples:
        >>> rows = run_attention_benchmark([64], ["local"], repeats=1, out_dir="/tmp/b", progress=False, flex=False)
        >>> rows[0]["contender"]
        'full'
    """
    with torch_threads(2):
        return _run(sizes, patterns, repeats, out_dir, progress, flex, device)


def _run(sizes, patterns, repeats, out_dir, progress, flex, device) -> list[dict]:
    log = print if progress else (lambda *a: None)
    patterns = patterns.split(",") if isinstance(patterns, str) else list(patterns)
    patterns = list(dict.fromkeys(["full", *patterns]))
    unknown = sorted(set(patterns) - set(DEFAULT_OPTIONS) - set(LEARNED))
    if unknown:
        raise ValueError(f"patterns {unknown} are not benchmarked; choose from {sorted([*DEFAULT_OPTIONS, *LEARNED])}")
    rows, raw, repeats = [], {}, int(repeats)
    for n in map(int, sizes):
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"size N={n} is not a perfect square (maps are square, N = side^2)")
        hw = (side, side)
        q, k, v = (torch.randn(1, 2, n, 32, device=device) for _ in range(3))
        log(f"{side}x{side} (N={n})")
        with torch.no_grad():
            contenders = _contenders(hw, patterns, q, k, v, flex, log)
            times = _time_interleaved(contenders, repeats, f"{side}x{side} rounds", progress)
            for name, c in contenders.items():
                t = times.get(name)
                mem = None if t is None or c.get("no_mem") else peak_bytes(c["fn"]) / 2**20
                row = {"side": side, "N": n, "contender": name,
                       "median_ms": None if t is None else statistics.median(t) * 1e3,
                       "vs_full": None if t is None else _ratio(times["full"], t),
                       "peak_MB": mem, "cached_MB": c["cached"] / 2**20, "note": c["note"]}
                rows.append(row)
                log(f"  {name:28s} {row['median_ms'] or float('nan'):9.2f} ms  peak {mem or float('nan'):8.1f} MB")
        raw[side] = times
    write_report(rows, raw, Path(out_dir), repeats)
    return rows


def _targets(rows: list[dict], raw: dict[int, dict[str, list[float]]]) -> list[tuple[str, str, bool | None]]:
    """The issue's targets at 80x80 (and 120x120) as (target, measured, met)."""
    out = []
    r80, r120 = raw.get(80, {}), raw.get(120, {})

    def add(target, have, value, fmt, ok):
        out.append((target, fmt.format(value) if have else "not measured", ok(value) if have else None))

    sdpa, flex = "local: SDPA + bool mask", "local: FlexAttention"
    add("local >= 25x faster than SDPA + bool mask (80x80)", "local" in r80 and sdpa in r80,
        _ratio(r80.get(sdpa, []), r80.get("local", [])) if sdpa in r80 else 0, "{:.1f}x", lambda x: x >= 25)
    add("local faster than compiled FlexAttention (aim 2x) (80x80)", flex in r80,
        _ratio(r80.get(flex, []), r80.get("local", [])) if flex in r80 else 0, "{:.2f}x", lambda x: x > 1)
    mem = {r["contender"]: r["peak_MB"] for r in rows if r["side"] == 80}
    have = mem.get("local") is not None and mem.get(sdpa)
    add("local peak memory <= 1/10 of SDPA + bool mask (80x80)", bool(have),
        mem["local"] / mem[sdpa] if have else 0, "{:.3f}", lambda x: x <= 0.1)
    have = "local" in r80 and "local" in r120
    add("local time(120x120) / time(80x80) <= 2.6", have,
        statistics.median(r120["local"]) / statistics.median(r80["local"]) if have else 0, "{:.2f}", lambda x: x <= 2.6)
    add("dilated within 1.5x of local (80x80)", "dilated" in r80,
        _ratio(r80.get("dilated", []), r80.get("local", [])) if "dilated" in r80 else 0, "{:.2f}x", lambda x: x <= 1.5)
    add("window >= 20x faster than full (80x80)", "window" in r80,
        _ratio(r80.get("full", []), r80.get("window", [])) if "window" in r80 else 0, "{:.1f}x", lambda x: x >= 20)
    add("reduce (r=4) >= 8x faster than full (80x80)", "reduce" in r80,
        _ratio(r80.get("full", []), r80.get("reduce", [])) if "reduce" in r80 else 0, "{:.1f}x", lambda x: x >= 8)
    add("routing (8x8 regions, top 4) >= 5x faster than full (80x80)", "routing" in r80,
        _ratio(r80.get("full", []), r80.get("routing", [])) if "routing" in r80 else 0, "{:.1f}x", lambda x: x >= 5)
    dense = 2 * 6400 * 6400 * 4 / 2**20  # MB of dense fp32 scores at 80x80, batch 1, 2 heads
    for name, share in (("reduce", 1 / 16), ("routing", 4 / 64)):  # keys per query / N: 1/r^2, topk/S^2
        have = mem.get(name) is not None
        add(f"{name} peak memory <= 2 x {share:.4g} of dense N x N scores ({dense:.0f} MB) (80x80)", have,
            mem[name] / dense if have else 0, "{:.4f} of dense", lambda x, s=share: x <= 2 * s)
    return out


def _fmt(value, spec):
    return "n/a" if value is None else format(value, spec)


def write_report(rows: list[dict], raw: dict[int, dict[str, list[float]]], out_dir: Path, repeats: int) -> None:
    """Write ``attention.csv``, ``attention.md`` (table + targets) and ``attention.png`` (log-log time vs N).

    Args:
        rows: Rows from :func:`run_attention_benchmark`.
        raw: Per-size per-contender lists of round times (seconds), for median ratios.
        out_dir: Output directory (created).
        repeats: Rounds per size, for the description.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out_dir / "attention.csv")
    lines = [
        "# Attention patterns: CPU benchmark", "",
        f"fp32, batch 1, 2 heads x 32, window 7 (dilation 2), {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}; {repeats} interleaved rounds per size, median time; ratios are medians of per-round "
        "ratios. `vs full` = time(full) / time(row). Written by `scripts/bench_attention.py`.", "",
        *header_notes("python scripts/bench_attention.py (or: yolo-attn bench attention)"), "",
        f"Host load average when written (1/5/15 min): {', '.join(f'{x:.1f}' for x in os.getloadavg())} on "
        f"{os.cpu_count()} cores; above ~1 other processes share the cores and absolute times and ratios are "
        "noisy (re-run on an idle machine).", "",
        "Peak memory: largest sum of live op-output bytes during one call, tracked by a `TorchDispatchMode` "
        "(each op output counts from creation until its tensor is freed; inputs excluded). `cached` = masks / "
        "index plans kept between calls (the N x N bool mask for the dense baselines; our plans are O(N)).", "",
        "## Targets", "", "| target | measured | met |", "|---|---|---|",
    ]
    for target, measured, ok in _targets(rows, raw):
        lines.append(f"| {target} | {measured} | {'n/a' if ok is None else ('yes' if ok else 'NO')} |")
    lines += ["", "## All contenders", "", "| map | N | contender | median ms | vs full | peak MB | cached MB | note |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['side']}x{r['side']} | {r['N']} | {r['contender']} | {_fmt(r['median_ms'], '.2f')} | "
                     f"{_fmt(r['vs_full'], '.1f')} | {_fmt(r['peak_MB'], '.1f')} | {r['cached_MB']:.1f} | {r['note']} |")
    (out_dir / "attention.md").write_text("\n".join(lines) + "\n")
    fig, (ax, mx) = plt.subplots(1, 2, figsize=(12, 5))
    names = list(dict.fromkeys(r["contender"] for r in rows))
    baselines = {"full": ("black", "--"), "local: SDPA + bool mask": ("dimgray", ":"), "local: FlexAttention": ("gray", "-.")}
    colours = iter(plt.get_cmap("tab20").colors)
    for name in names:
        colour, style = baselines.get(name, (None, "-"))
        colour = colour or next(colours)
        for axis, key in ((ax, "median_ms"), (mx, "peak_MB")):
            pts = [(r["N"], r[key]) for r in rows if r["contender"] == name and r[key]]
            if pts:
                axis.loglog(*zip(*pts), marker="o", ms=4, color=colour, linestyle=style, label=name)
    ax.set(xlabel="tokens N (H x W)", ylabel="median ms per call", title="time (CPU, 2 threads, batch 1, 2 heads x 32)")
    mx.set(xlabel="tokens N (H x W)", ylabel="peak MB of op outputs", title="peak memory per call")
    for axis in (ax, mx):
        axis.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.savefig(out_dir / "attention.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
