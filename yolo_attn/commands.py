"""The ``bench``, ``info`` and ``show`` modes of ``yolo-attn``: argument grammar and dispatch to library functions.

These modes take their own ``key=value`` arguments (pattern options, sizes, points), so :mod:`yolo_attn.cli` hands
them the raw words. Values are read as YAML scalars (``3`` -> int, ``True`` -> bool, ``{local: 2}`` -> dict); lists
are comma-separated (``sizes=400,1600``). Unknown keys are an error naming the allowed ones.

    yolo-attn bench attention [sizes=400,1600,6400,14400] [patterns=local,window,...] [reps=7] [flex=True] [out=benchmarks]
    yolo-attn bench models [configs=yolov5.yaml,...] [scales=n] [imgsz=640] [reps=10] [onnx=True] [openvino=True] [out=benchmarks]
    yolo-attn bench accuracy [configs=plain,local,...] [seeds=0,1,2] [epochs=60] [imgsz=320] [data=...] [jobs=1]
                             [time_budget=MIN] [part=train,latency,report] [runs=runs/NAME] [out=benchmarks]
    yolo-attn bench gpu [part=all|kernels|train|infer|amp] [quick=False] [out=benchmarks]     (CUDA only)
    yolo-attn bench finetune data=... [pretrained=plain.pt] [pretrain_epochs=15] [epochs=5] [imgsz=256] [seeds=0,1,2]
                             [configs=...] [part=train,report | report] [time_budget=MIN] [restore=DIR] [pack=DIR]
    yolo-attn info model=configs/yolov5n-local.yaml [imgsz=640] [batch=1]
    yolo-attn show pattern=local [window=3] [size=8x8] [point=x,y] [out=pattern_local.png] [any pattern option]
    yolo-attn show attention model=best.pt source=img.jpg point=x,y [imgsz=640] [out=attention.png]
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import yaml

__all__ = ["CommandError", "bench", "info", "show", "parse_words"]


class CommandError(ValueError):
    """A usage mistake in a bench/info/show command line (reported as one line, exit status 2)."""


def parse_words(words: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """Split words into positional words and ``key=value`` pairs (values parsed as YAML scalars).

    Examples:
        >>> parse_words(["attention", "sizes=400,1600", "reps=2"])
        (['attention'], {'sizes': '400,1600', 'reps': 2})
    """
    pos, kv = [], {}
    for w in words:
        if "=" in w:
            k, v = w.split("=", 1)
            k = k.lstrip("-")
            if not k:
                raise CommandError(f"'{w}': missing key before '='")
            try:
                kv[k] = yaml.safe_load(v) if v != "" else None
            except yaml.YAMLError:
                kv[k] = v
        else:
            pos.append(w)
    return pos, kv


def _list(value: Any, cast: Callable = str) -> list:
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    try:
        return [cast(x.strip() if isinstance(x, str) else x) for x in items if str(x).strip()]
    except ValueError as e:
        raise CommandError(f"cannot read list {value!r}: {e}") from None


def _take(kv: dict[str, Any], allowed: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(kv) - set(allowed))
    if unknown:
        raise CommandError(f"unknown argument(s) {unknown} for '{where}'; allowed: {', '.join(allowed)}")
    return {**allowed, **kv}


def _command_line(mode: str, words: Sequence[str]) -> str:
    return "yolo-attn " + " ".join(shlex.quote(w) for w in [mode, *words])


# ---------------------------------------------------------------------------------------------------------- bench
def _bench_attention(kv: dict[str, Any], command: str) -> Any:
    from .bench.attention import DEFAULT_OPTIONS, LEARNED, run_attention_benchmark

    a = _take(kv, {"sizes": "400,1600,6400,14400", "patterns": ",".join([*DEFAULT_OPTIONS, *LEARNED]), "reps": 7,
                   "flex": True, "device": "cpu", "out": "benchmarks"}, "bench attention")
    try:
        return run_attention_benchmark(_list(a["sizes"], int), _list(a["patterns"]), int(a["reps"]), a["out"],
                                       flex=bool(a["flex"]), device=str(a["device"]))
    except ValueError as e:  # a size that is not a square, an unknown pattern
        raise CommandError(str(e)) from None


def _bench_models(kv: dict[str, Any], command: str) -> Any:
    from .bench.peers import run_models_benchmark

    a = _take(kv, {"configs": None, "scales": "n", "imgsz": 640, "reps": 10, "warmup": 2, "threads": 2,
                   "onnx": True, "openvino": True, "peers": True, "out": "benchmarks"}, "bench models")
    configs = _list(a["configs"]) or None
    return run_models_benchmark(configs, _list(a["scales"]), int(a["imgsz"]), int(a["reps"]), int(a["warmup"]),
                                a["threads"], bool(a["onnx"]), bool(a["peers"]), bool(a["openvino"]), a["out"], command)


def _bench_accuracy(kv: dict[str, Any], command: str) -> Any:
    from .bench.accuracy import Launch, Recipe, Timing, run_accuracy_benchmark
    from .bench.study import StudyError
    from .checks import WorkflowError
    from .workflows import resolve_data

    a = _take(kv, {"configs": None, "seeds": "0,1,2", "data": None, "epochs": 60, "imgsz": 320, "batch": 16,
                   "val": False, "device": None, "jobs": 1, "workers": None, "cache": "ram", "time_budget": None,
                   "epochs_per_launch": None, "part": "all", "name": None, "runs": None, "out": "benchmarks",
                   "latency_imgsz": None, "reps": 10, "threads": 2, "restore": None, "pack": None,
                   "pack_mb": 20},
              "bench accuracy")
    try:
        recipe = Recipe(resolve_data(a["data"]), a["epochs"], a["imgsz"], a["batch"], bool(a["val"]))
        launch = Launch(None if a["device"] is None else str(a["device"]), a["jobs"], a["workers"], a["cache"],
                        a["time_budget"], a["epochs_per_launch"])
        timing = Timing(a["latency_imgsz"], a["reps"], a["threads"])
        if isinstance(a["pack_mb"], bool) or not isinstance(a["pack_mb"], (int, float)) or a["pack_mb"] <= 0:
            raise CommandError(f"pack_mb={a['pack_mb']!r} must be a number of MiB > 0")
        return run_accuracy_benchmark(_list(a["configs"]) or None, _list(a["seeds"]), recipe, launch, str(a["part"]),
                                      a["runs"], a["out"], a["name"], timing, a["restore"], a["pack"],
                                      float(a["pack_mb"]), command)
    except (StudyError, WorkflowError) as e:  # StudyError: unknown config, bad seeds, jobs < 1, other recipe
        raise CommandError(str(e)) from None


def _bench_gpu(kv: dict[str, Any], command: str) -> Any:
    from .bench.gpu import EXTRA_PARTS, PARTS

    a = _take(kv, {"part": "all", "quick": False, "out": "benchmarks"}, "bench gpu")
    allowed = (*PARTS, "all", *EXTRA_PARTS)
    if a["part"] not in allowed:
        raise CommandError(f"part={a['part']!r} is not one of {', '.join(allowed)}")
    if not isinstance(a["quick"], bool):
        raise CommandError(f"quick={a['quick']!r} must be True or False")
    import torch

    if not torch.cuda.is_available():
        raise CommandError("bench gpu needs a CUDA GPU, and torch.cuda.is_available() is False here "
                           f"(torch {torch.__version__}); run it on a machine with an NVIDIA GPU")
    from .bench.gpu import run_gpu_benchmark

    return run_gpu_benchmark(str(a["part"]), a["quick"], a["out"], command)


def _bench_finetune(kv: dict[str, Any], command: str) -> Any:
    from .bench.finetune import DEFAULT_CONFIGS, FinetuneError, run_finetune_benchmark

    a = _take(kv, {"data": None, "configs": ",".join(DEFAULT_CONFIGS), "pretrained": None, "pretrain_epochs": 15,
                   "epochs": 5, "imgsz": 256, "batch": 16, "device": "cpu", "seeds": "0", "workers": None,
                   "part": "train,report", "out": "benchmarks", "time_budget": None, "restore": None, "pack": None,
                   "pack_mb": 20}, "bench finetune")
    parts = set(_list(a["part"]))
    if not parts or parts - {"train", "report"}:
        raise CommandError(f"part={a['part']!r}: allowed train,report (the default) or report (from finished runs)")
    if not a["data"]:
        raise CommandError("bench finetune needs data=..., e.g. yolo-attn bench finetune "
                           "data=../shared/data/highway-320/data.yaml")
    try:
        return run_finetune_benchmark(str(a["data"]), _list(a["configs"]), a["pretrained"], int(a["pretrain_epochs"]),
                                      int(a["epochs"]), int(a["imgsz"]), int(a["batch"]),
                                      None if a["device"] is None else str(a["device"]), _list(a["seeds"], int),
                                      None if a["workers"] is None else int(a["workers"]), a["out"], command,
                                      train="train" in parts, time_budget=a["time_budget"], restore=a["restore"],
                                      pack=a["pack"], pack_mb=a["pack_mb"])
    except FinetuneError as e:  # bad configs / seeds, no plain model to pretrain, nothing finished to report
        raise CommandError(str(e)) from None


BENCHES = {"attention": _bench_attention, "models": _bench_models, "accuracy": _bench_accuracy,
           "finetune": _bench_finetune, "gpu": _bench_gpu}


def bench(words: Sequence[str]) -> Any:
    """``yolo-attn bench attention|models|accuracy key=value ...`` (see the module docstring)."""
    pos, kv = parse_words(words)
    if len(pos) != 1 or pos[0] not in BENCHES:
        raise CommandError(f"bench needs one of: {', '.join(BENCHES)} (got {' '.join(pos) or 'nothing'}), "
                           "e.g. yolo-attn bench attention sizes=400,1600")
    result = BENCHES[pos[0]](kv, _command_line("bench", words))
    out = kv.get("out", "benchmarks")
    print(f"bench {pos[0]}: results in {out}/")
    return result


# ----------------------------------------------------------------------------------------------------------- info
def info(words: Sequence[str]) -> dict:
    """``yolo-attn info model=... [imgsz=640] [batch=1]``: print the per-layer report of :mod:`yolo_attn.inspect`."""
    from .inspect import format_info, model_info

    pos, kv = parse_words(words)
    if pos:
        raise CommandError(f"info takes key=value arguments only, got {pos}")
    a = _take(kv, {"model": None, "imgsz": 640, "batch": 1}, "info")
    if not a["model"]:
        raise CommandError("info needs model=..., e.g. yolo-attn info model=configs/yolov5n-local.yaml imgsz=640")
    report = model_info(str(a["model"]), int(a["imgsz"]), int(a["batch"]))
    print(format_info(report))
    return report


# ----------------------------------------------------------------------------------------------------------- show
def _pair(value: Any, name: str) -> tuple[int, int]:
    from .show import parse_pair

    try:
        return parse_pair(value, name)
    except ValueError as e:
        raise CommandError(str(e)) from None


def show(words: Sequence[str]) -> Path:
    """``yolo-attn show pattern=... | show attention model=... source=... point=x,y`` (see the module docstring)."""
    from . import show as S

    pos, kv = parse_words(words)
    if pos == ["attention"]:
        a = _take(kv, {"model": None, "source": None, "point": None, "imgsz": 640, "out": "attention.png"},
                  "show attention")
        missing = [k for k in ("model", "source", "point") if a[k] in (None, "")]
        if missing:
            raise CommandError(f"show attention needs {', '.join(f'{k}=...' for k in missing)}, e.g. "
                               "yolo-attn show attention model=best.pt source=img.jpg point=320,240")
        px, py = _pair(a["point"], "point")
        path = S.show_attention(str(a["model"]), str(a["source"]), (px, py), a["out"], int(a["imgsz"]))
    elif not pos or pos == ["pattern"]:
        if not kv.get("pattern"):
            raise CommandError("show needs pattern=NAME (e.g. show pattern=local window=3 size=8x8) or "
                               "'show attention model=... source=... point=x,y'")
        kv = dict(kv)
        name = str(kv.pop("pattern"))
        size = _pair(kv.pop("size", "8x8"), "size")
        point = _pair(kv.pop("point"), "point") if "point" in kv else None
        out = kv.pop("out", f"pattern_{name}.png")
        if "global_idx" in kv:
            kv["global_idx"] = tuple(_list(kv["global_idx"], int))
        try:
            path = S.show_pattern(name, size, point, out, **kv)
        except (TypeError, ValueError) as e:  # unknown pattern / option, bad option value, point off the map
            raise CommandError(str(e)) from None
    else:
        raise CommandError(f"show: unexpected {' '.join(pos)}; use 'show pattern=NAME ...' or 'show attention ...'")
    print(f"saved {path}")
    return Path(path)
