"""Pictures of attention: pattern masks drawn the way the lectures do, and what one image position attends to.

:func:`show_pattern` draws the specification mask of a pattern (:func:`~yolo_attn.attention.pattern_mask`): on the left
the ``N x N`` attention matrix (rows = queries, columns = keys; grey = not computed, coloured = computed) with one query
row highlighted, on the right the ``h x w`` map with that query cell and the keys it attends to. A ``mixed`` pattern
gets one row of panels per head group.

:func:`show_attention` runs a detector on an image and, for every attention layer, recomputes the attention row of
the query at one image position from the layer's own ``q``/``k`` (captured by a forward pre-hook on the attention
module) and its pattern mask, then overlays the head-averaged weights on the image. Only that ``1 x N`` row is
computed; no module is changed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .attention import pattern_mask
from .attention.functional import mixed_groups
from .attention.options import resolve
from .attention import PATTERNS
from .attention.routing import example_routing_mask

__all__ = ["show_pattern", "show_attention", "attention_row", "GROUP_COLOURS", "DATA_MASKS"]

#: Learned kinds whose mask depends on the data: ``name -> (h, w, **options) -> BoolTensor[N, N]`` drawn for random
#: features (a trained layer chooses by content). Their pictures say so in the title.
DATA_MASKS: dict[str, Callable[..., torch.Tensor]] = {"routing": example_routing_mask}

#: Colour of computed cells per head group (the first is the lectures' blue).
GROUP_COLOURS = ("#4c9be8", "#3cb371", "#f0a030", "#b07cd8", "#e07070")
GREY = "#dcdcdc"
QUERY = "#d62728"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _option_text(options: dict[str, Any]) -> str:
    parts = []
    for k, v in options.items():
        if v is None or isinstance(v, torch.Tensor) or k == "options":
            continue
        if isinstance(v, dict):
            v = "{" + ", ".join(f"{a}: {b}" for a, b in v.items()) + "}"
        elif isinstance(v, (tuple, list)):
            if not v:
                continue
            v = ",".join(map(str, v))
        parts.append(f"{k}={v}")
    return ", ".join(parts)


def _head_groups(name: str, options: dict, mask: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """``[(label, BoolTensor[N, N])]``: one entry, or one per head group of ``mixed``."""
    if mask.dim() == 2:
        return [(name, mask)]
    groups, start = [], 0
    for spec, sub, count in mixed_groups(options):
        label = f"{count} head{'s' if count > 1 else ''}: {spec.name}" + (f" ({_option_text(sub)})" if sub else "")
        groups.append((label, mask[start]))
        start += count
    return groups


def _pattern_and_mask(pattern: str, hw: tuple[int, int], options: dict) -> tuple[str, dict, torch.Tensor]:
    """``(name, resolved options, mask)`` of a mask pattern, or of a data-dependent kind of :data:`DATA_MASKS`."""
    if pattern not in DATA_MASKS:
        spec, resolved = resolve(PATTERNS, pattern, options)
        return spec.name, resolved, pattern_mask(pattern, hw, **options)
    params = inspect.signature(DATA_MASKS[pattern]).parameters
    defaults = {k: p.default for k, p in params.items() if k not in ("h", "w")}
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for {pattern}; allowed: {sorted(defaults)}")
    resolved = {**defaults, **options}
    return pattern, resolved, DATA_MASKS[pattern](*hw, **resolved)


def _grid_lines(ax, rows: int, cols: int, colour: str = "white", lw: float = 0.6) -> None:
    ax.set_xticks(np.arange(-0.5, cols, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, rows, 1), minor=True)
    ax.grid(which="minor", color=colour, lw=lw)
    ax.tick_params(which="minor", length=0)


def _ticks(ax, n: int, axis: str) -> None:
    step = max(1, n // 8)
    ticks = list(range(0, n, step))
    (ax.set_xticks if axis == "x" else ax.set_yticks)(ticks)


def show_pattern(
    pattern: str,
    size: tuple[int, int] = (8, 8),
    point: tuple[int, int] | None = None,
    path: str | Path = "pattern.png",
    **options: Any,
) -> Path:
    """Draw a pattern's attention mask as in the lectures: grid, computed cells coloured, one query highlighted.

    Args:
        pattern: Pattern name (or alias, e.g. ``stride``) of :data:`~yolo_attn.attention.PATTERNS`, or a
            data-dependent kind of :data:`DATA_MASKS` (``routing``: drawn for random features from ``seed``).
        size: Map size ``(h, w)`` (keep ``h * w`` at most a few hundred: every matrix cell is drawn).
        point: Query position ``(x, y)`` on the map; defaults to the centre cell.
        path: Output PNG path.
        **options: Pattern options (``window``, ``dilation``, ``shift``, ``heads``, ``num_global_tokens``, ...).

    Returns:
        ``path``.

    Examples:
        >>> show_pattern("local", (8, 8), path="local.png", window=3).name
        'local.png'
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch, Rectangle

    h, w = size
    name, resolved, mask = _pattern_and_mask(pattern, (h, w), options)
    g = resolved.get("num_global_tokens", 0) if name == "global" else 0
    n_tot = mask.shape[-1]
    x, y = point if point is not None else (w // 2, h // 2)
    if not (0 <= x < w and 0 <= y < h):
        raise ValueError(f"point={point} lies outside the {h}x{w} map (x in [0, {w}), y in [0, {h}))")
    qi = g + y * w + x
    groups = _head_groups(name, resolved, mask)

    plt = _plt()
    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 5.2 * len(groups)), dpi=100, squeeze=False,
                             gridspec_kw={"width_ratios": [1.35, 1]})
    if name == "mixed":
        opt = "heads: " + ", ".join(f"{c} {sp.name}" for sp, _, c in mixed_groups(resolved))
    else:
        opt = _option_text(resolved)
    title = f"{name} attention on a {h}x{w} map, N = {h * w} tokens"
    if name in DATA_MASKS:
        title += " (mask chosen for random features; a trained layer routes by content)"
    if g:
        title += f" + {g} learned global token{'s' if g > 1 else ''}"
    title += f"\n{opt}" if opt else ""
    fig.suptitle(title, fontsize=12, fontweight="bold")
    for row, ((label, m), colour) in enumerate(zip(groups, GROUP_COLOURS * 4)):
        m = m.numpy()
        k_row = int(m[qi].sum())
        # matrix panel: 0 grey (not computed), 1 colour (computed), 2 dark (computed, row of the highlighted query)
        img = m.astype(np.int8)
        img[qi] = np.where(m[qi], 2, 0)
        cmap = ListedColormap([GREY, colour, "#1f3a93" if row == 0 else "#333333"])
        ax = axes[row, 0]
        ax.imshow(img, cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
        if n_tot <= 150:
            _grid_lines(ax, n_tot, n_tot, lw=0.4 if n_tot > 40 else 0.8)
        ax.add_patch(Rectangle((-0.5, qi - 0.5), n_tot, 1, fill=False, ec=QUERY, lw=2.2, zorder=5))
        ax.add_patch(Rectangle((qi - 0.5, qi - 0.5), 1, 1, fc=QUERY, ec=QUERY, zorder=6))
        _ticks(ax, n_tot, "x")
        _ticks(ax, n_tot, "y")
        density = m.sum() / m.size
        ax.set_title(f"{label}\nattention matrix: rows = queries, columns = keys ({100 * density:.0f}% computed)",
                     fontsize=10)
        ax.set_xlabel("key token index (t = y*w + x" + (f" + {g}" if g else "") + ")")
        ax.set_ylabel("query token index")
        # map panel: the keys of the highlighted query on the h x w grid
        ax = axes[row, 1]
        keys = m[qi, g:].reshape(h, w).astype(np.int8)
        keys[y, x] = 2
        ax.imshow(keys, cmap=ListedColormap([GREY, colour, QUERY]), vmin=0, vmax=2, interpolation="nearest")
        _grid_lines(ax, h, w, lw=1.2)
        ax.text(x, y, "q", ha="center", va="center", color="white", fontsize=11, fontweight="bold")
        _ticks(ax, w, "x")
        _ticks(ax, h, "y")
        extra = f"\n(incl. {g} learned global token{'s' if g > 1 else ''}, not on the map)" if g else ""
        ax.set_title(f"query (x={x}, y={y}) attends to {k_row} of {n_tot} keys{extra}", fontsize=10)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    handles = [Patch(color=GREY, label="not computed (weight 0)")]
    handles += [Patch(color=c, label=f"computed: {label}" if len(groups) > 1 else "computed")
                for (label, _), c in zip(groups, GROUP_COLOURS * 4)]
    handles += [Patch(fc="#1f3a93", ec=QUERY, lw=2, label="row / keys of the highlighted query"),
                Patch(color=QUERY, label="the query itself")]
    ncol = 3 if len(groups) == 1 else 1  # long per-head labels: one column, so nothing is cut at the sides
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), ncol), fontsize=9, frameon=False)
    bottom = 0.05 + 0.035 * ((len(handles) + 2) // 3) / len(groups)
    fig.tight_layout(rect=(0, bottom, 1, 1 - 0.04 / len(groups)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------ attention on an image
def _rel_bias_row(table: torch.Tensor, hw: tuple[int, int], qi: int) -> torch.Tensor:
    """Row ``qi`` of :func:`~yolo_attn.attention.relative_position_bias` (``[heads, N]``) without the ``N x N``."""
    h, w = hw
    a, b = (table.shape[1] + 1) // 2, (table.shape[2] + 1) // 2
    t = torch.arange(h * w, device=table.device)
    dy = (qi // w - t // w).clamp(1 - a, a - 1) + a - 1
    dx = (qi % w - t % w).clamp(1 - b, b - 1) + b - 1
    return table.flatten(1)[:, dy * (2 * b - 1) + dx]


def attention_row(module: torch.nn.Module, x: torch.Tensor, hw: tuple[int, int], qi: int) -> torch.Tensor:
    """Attention weights ``[heads, N_total]`` of query token ``qi`` of a mask-pattern attention module.

    Recomputes ``softmax(q_i k^T / sqrt(d) + bias_i)`` under the module's pattern mask row from its own ``qkv``
    projection: the same numbers the module's fast path uses internally.

    Args:
        module: :class:`~yolo_attn.attention.Attention` or
            :class:`~yolo_attn.attention.tokens.GlobalTokenAttention` (anything with ``qkv``, ``num_heads`` and a
            pattern).
        x: The module's input tokens ``[1, N, C]`` (first batch item used).
        hw: Map size ``(h, w)``.
        qi: Query index among the spatial tokens (``y * w + x``).

    Returns:
        ``[heads, N_total]`` weights (rows sum to 1); ``N_total`` includes leading global tokens.
    """
    if hasattr(module, "pattern_options"):
        pattern, options = module.pattern, dict(module.pattern_options)
    elif hasattr(module, "options"):  # learned global tokens over a base pattern
        pattern, options = "global", dict(module.options)
    else:
        raise TypeError(f"{type(module).__name__} has no mask pattern; attention maps need a mask-pattern module")
    x = x[:1]
    g = options.get("num_global_tokens", 0) if pattern == "global" else 0
    if g and x.shape[1] == hw[0] * hw[1]:
        x = torch.cat([module.global_tokens[None].to(x.dtype), x], dim=1)
    heads = module.num_heads
    b, n, c = x.shape
    q, k, _ = module.qkv(x).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
    logits = torch.einsum("hd,hnd->hn", q[0, :, g + qi], k[0]) * (c // heads) ** -0.5  # [heads, N]
    table = getattr(module, "rel_pos_bias", None)
    if table is not None:
        logits = logits + _rel_bias_row(table, hw, qi).to(logits.dtype)
    mask = pattern_mask(pattern, hw, **options)
    row = mask[..., g + qi, :].to(logits.device)  # [N] or [heads, N]
    logits = logits.masked_fill(~row.expand_as(logits), float("-inf"))
    return logits.softmax(-1)


def _attention_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """``(name, module)`` of every mask-pattern attention module, in forward order."""
    return [(name, m) for name, m in model.named_modules()
            if hasattr(m, "qkv") and hasattr(m, "num_heads") and (hasattr(m, "pattern_options") or hasattr(m, "options"))]


def _layer_label(name: str, module: torch.nn.Module) -> str:
    parts = name.split(".")
    layer = parts[1] if len(parts) > 1 and parts[0] == "model" else name
    pattern = getattr(module, "pattern", "global")
    return f"layer {layer} ({pattern})"


def _load_image(source: str | Path, imgsz: int) -> tuple[np.ndarray, torch.Tensor, tuple[float, float, float]]:
    """RGB letterboxed image, its ``[1, 3, S, S]`` tensor and ``(gain, pad_x, pad_y)``."""
    import cv2
    from ultralytics.data.augment import LetterBox

    bgr = cv2.imread(str(source))
    if bgr is None:
        raise FileNotFoundError(f"source={source}: not an image file")
    h0, w0 = bgr.shape[:2]
    boxed = LetterBox((imgsz, imgsz), auto=False, stride=32)(image=bgr)
    gain = min(imgsz / h0, imgsz / w0)
    pad = ((imgsz - round(w0 * gain)) / 2, (imgsz - round(h0 * gain)) / 2)
    rgb = boxed[..., ::-1].copy()
    t = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255)[None]
    return rgb, t, (gain, *pad)


@torch.no_grad()
def show_attention(
    model: str | Path | torch.nn.Module,
    source: str | Path,
    point: tuple[float, float],
    path: str | Path = "attention.png",
    imgsz: int = 640,
) -> Path:
    """Overlay, per attention layer, what the token under image position ``point`` attends to.

    Args:
        model: Checkpoint (``best.pt``), config (``yolov5n-local.yaml``, random weights) or a ``DetectionModel``.
        source: Image file.
        point: ``(x, y)`` in pixels of the original image.
        path: Output PNG path.
        imgsz: Letterboxed input size.

    Returns:
        ``path``.
    """
    from .bench.models import build_model

    if isinstance(model, torch.nn.Module):
        net = model
    elif Path(str(model)).suffix in (".pt", ".pth"):
        from .integration import YOLO

        net = YOLO(str(model)).model
    else:
        net = build_model(str(model))
    net = net.float().eval()
    mods = _attention_modules(net)
    if not mods:
        raise ValueError(f"model={model} has no mask-pattern attention layer to show")
    rgb, x, (gain, px, py) = _load_image(source, imgsz)
    ix, iy = point[0] * gain + px, point[1] * gain + py
    if not (0 <= ix < imgsz and 0 <= iy < imgsz):
        raise ValueError(f"point={tuple(point)} lies outside the image")
    captured: dict[str, tuple[torch.Tensor, tuple[int, int]]] = {}

    def capture(name: str, args: tuple) -> None:  # returns None: a pre-hook's return value would replace the input
        captured.setdefault(name, (args[0], tuple(int(v) for v in args[1])))

    hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: capture(name, args)) for name, m in mods]
    try:
        net(x)
    finally:
        for hk in hooks:
            hk.remove()

    import cv2

    plt = _plt()
    names = [n for n, _ in mods if n in captured]
    cols = min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.8 * rows), dpi=100, squeeze=False)
    module_of = dict(mods)
    for ax, name in zip(axes.flat, names):
        tokens, (h, w) = captured[name]
        qx, qy = min(int(ix * w / imgsz), w - 1), min(int(iy * h / imgsz), h - 1)
        weights = attention_row(module_of[name], tokens, (h, w), qy * w + qx).float().mean(0)
        spatial = weights[-h * w:].reshape(h, w).cpu().numpy()
        heat = cv2.resize(spatial / max(spatial.max(), 1e-12), (imgsz, imgsz), interpolation=cv2.INTER_NEAREST)
        ax.imshow((rgb * 0.55).astype(np.uint8))  # dimmed: attended cells stand out, the rest is not coloured
        ax.imshow(np.ma.masked_where(heat <= 0, heat), cmap="jet", alpha=0.55, vmin=0, vmax=1)
        ax.plot([ix], [iy], marker="+", color="white", ms=14, mew=2.5)
        ax.plot([ix], [iy], marker="+", color="black", ms=10, mew=1.2)
        ax.set_title(f"{_layer_label(name, module_of[name])}\n{h}x{w} map, query cell (x={qx}, y={qy}), "
                     f"head mean", fontsize=9)
        ax.axis("off")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(f"What image position ({point[0]:g}, {point[1]:g}) attends to in {Path(str(source)).name}\n"
                 "(colour = attention weight / max, averaged over heads; uncoloured = not attended)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.1 / rows))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def parse_pair(value: Any, name: str, sep: Sequence[str] = (",", "x")) -> tuple[int, int]:
    """``"8x8"`` / ``"3,4"`` / ``(3, 4)`` / ``8`` -> a pair of ints (errors name the argument)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return int(value[0]), int(value[1])
    text = str(value)
    for s in sep:
        if s in text:
            a, b = text.split(s, 1)
            try:
                return int(float(a)), int(float(b))
            except ValueError:
                break
    raise ValueError(f"{name}={value!r} must be a pair such as {name}=8x8 or {name}=3,4")
