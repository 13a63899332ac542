"""The ``yolo-attn`` command: ultralytics' ``yolo MODE key=value ...`` grammar, with yolo_attn's blocks and configs.

    yolo-attn train                                   # default attention config on the synthetic shapes dataset
    yolo-attn train model=yolov5n-c3tr.yaml data=data/shapes.yaml epochs=50 imgsz=640 device=0
    yolo-attn train resume model=runs/detect/train/weights/last.pt
    yolo-attn val model=best.pt
    yolo-attn predict model=best.pt source=images/
    yolo-attn export model=best.pt format=onnx
    yolo-attn help

Arguments are parsed with ultralytics' own helpers (``merge_equals_args``, ``parse_key_value_pair``) and checked
against ultralytics' defaults (keys and value types), so everything ``yolo`` accepts is accepted here, and a typo is
one line naming the key and its close matches (exit status 2). The work is done by :mod:`yolo_attn.workflows`.

Offline by default: unless ``YOLO_OFFLINE`` is set, the command sets ``YOLO_OFFLINE=1`` (and ``YOLO_AUTOINSTALL=0``)
before ultralytics is imported (see ``yolo_attn/__init__.py``); ``YOLO_OFFLINE=0 yolo-attn ...`` opts out.
"""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["MODES", "UsageError", "entrypoint", "parse_args"]

OFFLINE_DEFAULTS = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}
for _k, _v in OFFLINE_DEFAULTS.items():  # effective here only if ultralytics is not imported yet (scripts/*.py)
    os.environ.setdefault(_k, _v)

from ultralytics.cfg import DEFAULT_CFG_DICT, get_cfg, merge_equals_args, parse_key_value_pair  # noqa: E402

from . import __version__, registered_blocks, workflows  # noqa: E402
from .integration import CONFIG_DIR, YamlConfigError, ensure_fonts  # noqa: E402
from .transfer import TransferError  # noqa: E402

EXTRA_KEYS = {"parity": True}  # yolo_attn's own keys (export: run the exported file against PyTorch)
#: ultralytics' older precision spellings, still mapped by it onto ``quantize`` (16 / 8), so accepted here too
PRECISION_KEYS = {"half": False, "int8": False}
ALWAYS_TRUE_FLAGS = {"half", "int8", "end2end", "nms"}  # bare flags ultralytics treats as True (defaults None)
HELP_WORDS = {"help", "-h", "--help", "h"}
VERSION_WORDS = {"version", "--version", "-v"}


class UsageError(ValueError):
    """A command-line mistake; reported as one line, exit status 2."""


# ----------------------------------------------------------------------------------------------------------- modes
def _train(args: dict[str, Any]) -> None:
    workflows.train(args.pop("model", None), args.pop("data", None), **args)


def _val(args: dict[str, Any]) -> None:
    workflows.val(_required(args, "model", "val"), args.pop("data", None), **args)


def _predict(args: dict[str, Any]) -> None:
    workflows.predict(_required(args, "model", "predict"), args.pop("source", None), **args)


def _export(args: dict[str, Any]) -> None:
    workflows.export(_required(args, "model", "export"), args.pop("format", "onnx"), **args)


def _own_grammar(mode: str) -> Callable[[list[str]], None]:
    """Handler of a mode that parses its own words (pattern options, sizes, points): see :mod:`yolo_attn.commands`."""

    def handler(words: list[str]) -> None:
        from . import commands

        try:
            getattr(commands, mode)(words)
        except commands.CommandError as e:
            raise UsageError(str(e)) from None

    return handler


MODES: dict[str, Callable[[dict[str, Any]], None]] = {
    "train": _train,
    "val": _val,
    "predict": _predict,
    "export": _export,
    "bench": _own_grammar("bench"),
    "info": _own_grammar("info"),
    "show": _own_grammar("show"),
}
RAW_MODES = {"bench", "info", "show"}  # handed the raw words after the mode (not ultralytics' keys)


def _required(args: dict[str, Any], key: str, mode: str) -> Any:
    if args.get(key) in (None, ""):
        raise UsageError(f"{mode} needs {key}=..., e.g. yolo-attn {mode} {key}=runs/detect/train/weights/best.pt")
    return args.pop(key)


# ---------------------------------------------------------------------------------------------------------- parsing
def _valid_keys() -> dict[str, Any]:
    return {**PRECISION_KEYS, **DEFAULT_CFG_DICT, **EXTRA_KEYS}


def _unknown(word: str, valid: Sequence[str]) -> UsageError:
    close = difflib.get_close_matches(word, list(valid), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see 'yolo-attn help'"
    return UsageError(f"'{word}' is not a valid argument{hint}")


def parse_args(argv: Sequence[str]) -> tuple[str | None, dict[str, Any]]:
    """Parse ``MODE key=value ...`` the way ultralytics' ``yolo`` does.

    Args:
        argv: Arguments without the program name.

    Returns:
        ``(mode or None, overrides)``; ``mode`` is ``"help"`` / ``"version"`` for those words.

    Raises:
        UsageError: Unknown or malformed arguments, naming the argument and close matches.

    Examples:
        >>> parse_args(["train", "epochs=3", "imgsz=64", "resume"])
        ('train', {'epochs': 3, 'imgsz': 64, 'resume': True})
    """
    valid = _valid_keys()
    mode, out = None, {}
    try:
        merged = merge_equals_args(list(argv))
    except SyntaxError as e:
        raise UsageError(str(e)) from None
    for a in merged:
        if a.startswith("--") and a.lower() not in HELP_WORDS | VERSION_WORDS:
            a = a[2:]  # ultralytics accepts (and warns about) leading dashes
        a = a[:-1] if a.endswith(",") else a
        if "=" in a:
            try:
                k, v = parse_key_value_pair(a)
            except (AssertionError, ValueError, SyntaxError) as e:
                raise UsageError(f"'{a}': {e}") from None
            if k == "mode":
                a = str(v)  # `mode=train` spelling
            elif k == "cfg" and v is not None:  # a YAML of overrides; explicit arguments win
                out = {**_load_cfg(v), **out}
                continue
            else:
                if k not in valid:
                    raise _unknown(k, valid)
                out[k] = v
                continue
        word = a.lower()
        if word in HELP_WORDS:
            return "help", {}
        if word in VERSION_WORDS:
            return "version", {}
        if mode is None and word in MODES:
            mode = word
        elif word in {"detect"}:
            out["task"] = word
        elif isinstance(valid.get(word), bool) or word in ALWAYS_TRUE_FLAGS:
            out[word] = True  # bare boolean flag: `resume`, `half`, `dynamic`, ...
        elif word in valid:
            raise UsageError(f"'{a}' needs a value, e.g. {a}={valid[a]}")
        elif word in MODES:
            raise UsageError(f"two modes given ('{mode}' and '{word}'); use one of {', '.join(MODES)}")
        else:
            raise _unknown(a, [*valid, *MODES])
    _check_values(out)
    return mode, out


def _load_cfg(path: Any) -> dict[str, Any]:
    import yaml

    p = Path(str(path))
    if not p.is_file():
        raise UsageError(f"cfg={path}: no such file")
    d = yaml.safe_load(p.read_text()) or {}
    if not isinstance(d, dict):
        raise UsageError(f"cfg={path}: expected a mapping of arguments")
    valid = _valid_keys()
    for k in d:
        if k not in valid:
            raise UsageError(f"cfg={path}: " + str(_unknown(k, valid)))
    return {k: v for k, v in d.items() if k != "cfg"}


def _check_values(args: dict[str, Any]) -> None:
    """Type/range check with ultralytics' own rules (keys are already known to be valid)."""
    checkable = {k: v for k, v in args.items() if k in DEFAULT_CFG_DICT and k not in {"model", "data", "mode"}}
    try:
        get_cfg(DEFAULT_CFG_DICT, checkable)
    except (TypeError, ValueError, SyntaxError) as e:
        raise UsageError(str(e).strip().splitlines()[0]) from None
    if "parity" in args and not isinstance(args["parity"], bool):
        raise UsageError(f"'parity={args['parity']}' must be True or False")


# ----------------------------------------------------------------------------------------------------------- help
def help_text() -> str:
    """The ``yolo-attn help`` text: grammar, examples, shipped configs and registered blocks.

    Returns:
        Multi-line text.
    """
    configs = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
    blocks = registered_blocks()
    lines = [
        f"yolo-attn {__version__}: ultralytics' `yolo` grammar with yolo_attn's attention blocks",
        "",
        "  yolo-attn MODE [key=value ...]      MODE: " + ", ".join(MODES),
        "",
        "  yolo-attn train                                    # default attention model on the synthetic shapes set",
        "  yolo-attn train model=yolov5n-c3tr.yaml data=data/shapes.yaml epochs=50 imgsz=640 device=0",
        "  yolo-attn train resume model=runs/detect/train/weights/last.pt",
        "  yolo-attn train model=yolov5s-local.yaml pretrained=yolov5su.pt data=my.yaml   # fine-tune from stock YOLOv5u",
        "  yolo-attn val model=runs/detect/train/weights/best.pt",
        "  yolo-attn predict model=best.pt source=path/to/images conf=0.25",
        "  yolo-attn export model=best.pt format=onnx         # also torchscript and every other ultralytics format",
        "  yolo-attn bench attention|models|accuracy|finetune # cost / accuracy benchmarks -> benchmarks/",
        "  yolo-attn bench gpu [part=kernels|train|infer|amp] [quick=True]  # the CUDA study -> benchmarks/gpu.*",
        "  yolo-attn info model=yolov5n-local.yaml imgsz=640  # per-layer tokens, attention FLOPs and memory",
        "  yolo-attn show pattern=local window=3 size=8x8     # the mask as a grid picture (PNG)",
        "  yolo-attn show attention model=best.pt source=img.jpg point=320,240",
        "",
        "Every ultralytics argument passes through (see `yolo cfg`). Bare config names resolve to the configs",
        "below; put the scale letter after the version: yolov5s-c3tr.yaml builds yolov5-c3tr.yaml at scale s.",
        f"Default model: {workflows.default_model()}; default data: the synthetic shapes dataset (generated once).",
        "Nothing is downloaded; YOLO_OFFLINE=1 is set unless you set YOLO_OFFLINE yourself.",
        "",
        f"Configs ({CONFIG_DIR}):",
        *(f"  {c}" for c in configs),
        "",
        "Blocks (usable in YAML model configs):",
        *(f"  {name:<18} {cls.__module__}.{cls.__qualname__}" for name, cls in blocks.items()),
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------- entry point
def entrypoint(argv: Sequence[str] | None = None) -> int:
    """Run ``yolo-attn`` (console-script entry point).

    Args:
        argv: Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        Exit status: 0 on success, 2 on a usage error (one line on stderr), 130 on Ctrl-C.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv and argv[0].lower() in RAW_MODES:
            ensure_fonts()
            MODES[argv[0].lower()](argv[1:])
            return 0
        mode, args = parse_args(argv)
        if mode in (None, "help"):
            if mode is None and argv:
                raise UsageError(f"missing mode; use one of: {', '.join(MODES)} (or 'yolo-attn help')")
            print(help_text())
            return 0
        if mode == "version":
            print(__version__)
            return 0
        ensure_fonts()
        MODES[mode](args)
    except (UsageError, workflows.WorkflowError, YamlConfigError, TransferError) as e:
        print(f"yolo-attn: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"yolo-attn: error: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("yolo-attn: interrupted", file=sys.stderr)
        return 130
    return 0


def main() -> None:
    """``python -m yolo_attn.cli``: run :func:`entrypoint` and exit with its status."""
    sys.exit(entrypoint())


if __name__ == "__main__":
    main()
