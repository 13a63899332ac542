"""The single seam between yolo_attn and ultralytics.

This is the only module that touches ultralytics internals. It

- keeps the registry of yolo_attn blocks that YAML model configs may name (:func:`register_block`);
- wraps ``ultralytics.nn.tasks.parse_model`` so that a registered block receives exactly what ultralytics gives its
  own C3 / C3TR: ``c1`` = the real output channels of its ``from`` layer, ``c2`` = the YAML's first argument scaled
  by the width multiple and capped by ``max_channels``, and the repeat count scaled by the depth multiple;
- turns an unknown YAML module name into an error that names the name, the layer and what is available;
- wraps ``yaml_model_load`` so that a scaled config name (``yolov5n-local.yaml`` -> ``yolov5-local.yaml`` + scale
  ``n``) resolves in any folder: ultralytics drops the scale letter with a regex over the whole path string, so a
  folder such as ``run45m`` or ``env2x`` lost a letter and the config "did not exist";
- puts our classes on torch's safe-globals list (``ULTRALYTICS_SAFE_LOAD=1``);
- provides the :class:`YOLO` model class and the :class:`AttnDetectionTrainer` that DDP workers import;
- loads pretrained weights through ultralytics' own transfer (``DetectionModel.load``) after the checks of
  :mod:`yolo_attn.transfer`, and prints its per-layer transfer report (:func:`load_pretrained`).

How the channel inference works: ultralytics infers channels only for modules in two sets built inside
``parse_model`` (identity membership, so subclasses do not qualify). The wrapper hands each of our layers to the
original parser as a stand-in ultralytics module (``C3`` with args ``[c2]`` for repeatable blocks, ``Conv`` for the
others), reads the resolved ``c1``, ``c2`` and ``n`` back from the built stand-in, and builds the real block in its
place. Our YAML arguments never pass through ultralytics' ``ast.literal_eval``: strings and mappings reach the
block exactly as YAML wrote them.
"""

from __future__ import annotations

import difflib
import functools
import logging
import shutil
import sys
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

import ultralytics
import ultralytics.nn.tasks as tasks
from ultralytics.models import YOLO as _UltralyticsYOLO
from ultralytics.models.yolo.detect import DetectionTrainer

from . import transfer
from .attention.tiling import fixed_sizes
from .configs import CONFIG_DIR, unscaled
from .export_checks import check_export_request, check_exported

__all__ = [
    "TESTED_ULTRALYTICS",
    "YOLO",
    "AttnDetectionTrainer",
    "YamlConfigError",
    "export_format_arguments",
    "install",
    "load_pretrained",
    "read_checkpoint",
    "register_block",
    "registered_blocks",
    "resolve_config",
]

LOGGER = logging.getLogger("yolo_attn")
TESTED_ULTRALYTICS = ((8, 4), (8, 5))  # [lower, upper) on (major, minor)
DEFAULT_MODEL = "yolov5n-local.yaml"


class YamlConfigError(ValueError):
    """A model config names something that cannot be built; the message says which layer and what is allowed."""


@dataclass(frozen=True)
class _Entry:
    cls: type[nn.Module]
    repeat: bool  # True: (c1, c2, n, *args), n scaled by depth; False: (c1, c2, *args), n must be 1
    stock: str  # the ultralytics module that stands in for it in parse_model (C3, C2f, C3k2; Conv when not repeat)
    stock_args: tuple[str, ...] = ()  # the stock module's YAML arguments after c2 that the block takes first


#: Stand-ins a repeatable block may augment (its first base class among these), most specific first.
STANDINS = ("C3k2", "C2f", "C3")
#: How a stock argument is read back from the stand-in that parse_model built (it rewrites some by scale).
_READ_BACK: dict[str, Callable[[nn.Module], Any]] = {
    "shortcut": lambda m: bool(m.m[0].add),  # C2f: its bottlenecks' residual
    "c3k": lambda m: type(m.m[0]).__name__ == "C3k",  # C3k2: C3k inner blocks (parse_model: on at scales m/l/x)
}


def _standin(cls: type[nn.Module], repeat: bool) -> str:
    """The ultralytics module ``parse_model`` builds in place of ``cls``: its stock base, else ``C3`` / ``Conv``."""
    if not repeat:
        return "Conv"
    bases = {c for c in cls.__mro__ if c.__module__.startswith("ultralytics.")}
    return next((name for name in STANDINS if getattr(tasks, name, None) in bases), "C3")


_REGISTRY: dict[str, _Entry] = {}


def register_block(cls: type[nn.Module] | None = None, *, name: str | None = None, repeat: bool = True):
    """Make a block class resolvable by name in ultralytics YAML model configs.

    The block is built as ``cls(c1, c2, n, *args)`` (``repeat=True``) or ``cls(c1, c2, *args)`` (``repeat=False``),
    where ``c1`` is the real channel count of its input, ``c2`` the YAML's first argument scaled by the model's
    width multiple (capped by ``max_channels``), ``n`` the YAML repeat count scaled by the depth multiple, and
    ``args`` the remaining YAML arguments exactly as written. The block must output ``c2`` channels.

    A repeatable block that subclasses ultralytics' ``C3k2``, ``C2f`` or ``C3`` is resolved as that module (else as
    ``C3``), so it gets what ultralytics gives it at every scale. A class attribute ``stock_args`` (names, e.g.
    ``("c3k",)``) declares the stock module's own YAML arguments after ``c2`` that the block takes first: the YAML's
    leading non-string arguments fill them, ultralytics builds its module with them, and the block receives the
    values ultralytics used (``C3k2``'s ``c3k`` is switched on at scales m/l/x), given or not.

    Registering the same class twice is harmless; registering a different class under a taken name is an error.
    Usable as a decorator, with or without arguments.

    Args:
        cls: The ``nn.Module`` subclass to register.
        name: YAML name; defaults to the class name.
        repeat: Whether the block takes a depth-scaled repeat count as its third argument.

    Returns:
        The class itself (or a decorator, when called without ``cls``).

    Examples:
        >>> @register_block
        ... class MyBlock(nn.Module):
        ...     def __init__(self, c1, c2, n=1):
        ...         super().__init__()
        ...         self.conv = nn.Conv2d(c1, c2, 1)
    """
    if cls is None:
        return functools.partial(register_block, name=name, repeat=repeat)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_block expects an nn.Module subclass, got {cls!r}")
    key = name or cls.__name__
    if not key.isidentifier():
        raise ValueError(f"block name {key!r} is not a valid identifier")
    old = _REGISTRY.get(key)
    same = old is not None and (old.cls is cls or _qualname(old.cls) == _qualname(cls))  # module re-import
    if old is not None and not same:
        raise ValueError(f"block name {key!r} is already registered to {_qualname(old.cls)}; pass name=... to rename")
    if key in vars(tasks) and not same:
        raise ValueError(f"block name {key!r} would shadow ultralytics' own module of that name; choose another name")
    stock_args = tuple(getattr(cls, "stock_args", ()))
    unknown = [a for a in stock_args if a not in _READ_BACK]
    if unknown or (stock_args and not repeat):
        raise ValueError(f"stock_args={stock_args} of {key}: only {', '.join(_READ_BACK)} of a repeatable block")
    _REGISTRY[key] = _Entry(cls, repeat, _standin(cls, repeat), stock_args)
    allow_safe_load(cls)
    install()
    return cls


def registered_blocks() -> dict[str, type[nn.Module]]:
    """Return ``{yaml_name: class}`` of every registered block.

    Returns:
        A new dict, sorted by name.
    """
    return {k: _REGISTRY[k].cls for k in sorted(_REGISTRY)}


def allow_safe_load(*classes: type) -> None:
    """Put classes on torch's safe-globals list so ``ULTRALYTICS_SAFE_LOAD=1`` checkpoints can contain them.

    Args:
        *classes: Classes that pickled models reference.
    """
    torch.serialization.add_safe_globals(list(classes))


def allow_package_classes(package: str = "yolo_attn") -> None:
    """Allow every ``nn.Module`` subclass defined in the already-imported modules of ``package`` for safe loading.

    Args:
        package: Top-level package name whose modules are scanned.
    """
    found = []
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not (mod_name == package or mod_name.startswith(package + ".")):
            continue
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__ == mod_name:
                found.append(obj)
    allow_safe_load(*found)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# --------------------------------------------------------------------------------------------------- parse_model seam
def _check_version() -> None:
    try:
        major, minor = (int(x) for x in ultralytics.__version__.split(".")[:2])
    except ValueError:
        major = minor = -1
    lo, hi = TESTED_ULTRALYTICS
    if not lo <= (major, minor) < hi:
        LOGGER.warning(
            f"yolo_attn was tested with ultralytics >={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}; found {ultralytics.__version__}. "
            f"If models fail to build, install a tested version: pip install 'ultralytics>={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}'"
        )
    missing = [n for n in ("parse_model", "C3", "Conv") if not hasattr(tasks, n)]
    if missing:
        raise ImportError(
            f"ultralytics {ultralytics.__version__} lacks ultralytics.nn.tasks.{', '.join(missing)}, which yolo_attn "
            f"needs; install a tested version: pip install 'ultralytics>={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}'"
        )


def install() -> None:
    """Install the ``parse_model`` wrapper into ultralytics (idempotent; called on ``import yolo_attn``)."""
    if getattr(tasks.parse_model, "_yolo_attn_original", None) is not None:
        return
    _check_version()
    original = tasks.parse_model

    @functools.wraps(original)
    def parse_model(d: dict, ch: int, verbose: bool = True):
        return _parse_model(original, d, ch, verbose)

    parse_model._yolo_attn_original = original
    tasks.parse_model = parse_model
    _install_yaml_model_load()


def _install_yaml_model_load() -> None:
    """Wrap ``yaml_model_load`` where ultralytics calls it (tasks, and the name engine.model imported)."""
    import ultralytics.engine.model as engine_model

    original = tasks.yaml_model_load

    @functools.wraps(original)
    def yaml_model_load(path: str | Path) -> dict:
        return _yaml_model_load(original, path)

    yaml_model_load._yolo_attn_original = original
    for module in (tasks, engine_model):
        if getattr(module, "yaml_model_load", None) is original:
            module.yaml_model_load = yaml_model_load


def _yaml_model_load(original: Callable[[Any], dict], path: str | Path) -> dict:
    """ultralytics' ``yaml_model_load``, with the scale letter dropped from the file name only.

    A scaled name that does not exist as a file (``<dir>/yolov5n-local.yaml``) is read from its unscaled sibling
    (``<dir>/yolov5-local.yaml``); the scale and ``yaml_file`` still come from the name as given, as ultralytics
    intends. Everything else goes to the original unchanged.
    """
    p, unified = Path(path), unscaled(path)
    if unified == p or p.exists() or not unified.is_file():
        return original(path)
    d = original(unified)
    d["scale"], d["yaml_file"] = tasks.guess_model_scale(p), str(p)
    return d


def _resolves_in_ultralytics(name: str) -> bool:
    """Whether ultralytics' own parse_model can resolve a YAML module name (same rules, no import side effects)."""
    if name.startswith("nn."):
        return hasattr(nn, name[3:])
    if name.startswith("torchvision.ops."):
        import torchvision

        return hasattr(torchvision.ops, name[16:])
    return name in vars(tasks)


def _unknown_module_message(i: int, name: Any) -> str:
    ours = sorted(_REGISTRY)
    pool = ours + [n for n, v in vars(tasks).items() if isinstance(v, type) and issubclass(v, nn.Module)]
    close = difflib.get_close_matches(str(name), pool, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return (
        f"layer {i}: unknown module {name!r}.{hint} yolo_attn provides: {', '.join(ours) or '(none registered)'}; "
        "ultralytics modules (Conv, C3, SPPF, Concat, Detect, ...) and nn.<Name> / torchvision.ops.<Name> also work."
    )


def _layers(d: dict) -> list:
    for key in ("backbone", "head"):
        if not isinstance(d.get(key), list):
            raise YamlConfigError(f"model config needs a '{key}' list of layers, got {type(d.get(key)).__name__}")
    return d["backbone"] + d["head"]


# --- YAML-level check: the model must end in an output head (issue #7) -------------------------------------------
_HEAD_BASES = ("Detect", "Classify", "RTDETRDecoder", "SemanticSegment", "Depth")  # and their subclasses


def output_heads() -> list[str]:
    """Names of the ultralytics modules a model config may end with (``Detect``, ``Segment``, ``Classify``, ...)."""
    bases = tuple(v for v in (getattr(tasks, n, None) for n in _HEAD_BASES) if isinstance(v, type))
    return sorted(n for n, v in vars(tasks).items() if isinstance(v, type) and issubclass(v, bases))


def check_output_head(d: dict) -> None:
    """Raise :class:`YamlConfigError` unless the last layer of a model config is an output head such as ``Detect``.

    Without one, ultralytics cannot tell the task and fails with an unrelated message deep inside model building.

    Args:
        d: Model config dict (as loaded from the YAML).
    """
    layers = _layers(d)
    last = layers[-1] if layers else None
    name = last[2] if isinstance(last, (list, tuple)) and len(last) == 4 else last
    if name not in output_heads():
        detect = [n for n in output_heads() if "detect" in n.lower()]
        raise YamlConfigError(
            f"layer {len(layers) - 1}: the last layer is {name!r}, not an output head; a model config must end with "
            f"one of {', '.join(detect)} (detection) or {', '.join(h for h in output_heads() if h not in detect)}, "
            "e.g. - [[17, 20, 23], 1, Detect, [nc]]"
        )


def _parse_model(original: Callable, d: dict, ch: int, verbose: bool):
    """Parse a model dict with ultralytics, building registered yolo_attn blocks with inferred channels."""
    layers = _layers(d)
    check_output_head(d)
    ours: dict[int, tuple[str, list]] = {}
    standin_layers = []
    for i, layer in enumerate(layers):
        if not (isinstance(layer, (list, tuple)) and len(layer) == 4):
            raise YamlConfigError(f"layer {i}: expected [from, number, module, args], got {layer!r}")
        f, n, m, args = layer
        if not isinstance(m, str) or not (m in _REGISTRY or _resolves_in_ultralytics(m)):
            raise YamlConfigError(_unknown_module_message(i, m))
        if m not in _REGISTRY:
            standin_layers.append(layer)
            continue
        entry = _REGISTRY[m]
        if not isinstance(args, list) or not args or isinstance(args[0], bool) or not isinstance(args[0], int):
            raise YamlConfigError(
                f"layer {i} ({m}): the first argument must be the output channel count (int), got args={args!r}"
            )
        if not isinstance(n, int) or n < 1 or (not entry.repeat and n != 1):
            allowed = "an int >= 1" if entry.repeat else "1 (this block does not repeat)"
            raise YamlConfigError(f"layer {i} ({m}): number={n!r} is not allowed; use {allowed}")
        given = _leading_stock_args(args[1:], len(entry.stock_args))
        ours[i] = (m, list(args[1 + len(given):]))
        standin_layers.append([f, n, entry.stock, [args[0], *given]])
    if not ours:
        return original(d, ch, verbose=verbose)

    d2 = deepcopy(d)
    nb = len(d2["backbone"])
    d2["backbone"], d2["head"] = standin_layers[:nb], standin_layers[nb:]
    model, save = original(d2, ch, verbose=False)
    for i, (name, extra) in ours.items():
        stand = model[i]
        entry = _REGISTRY[name]
        if entry.repeat:
            last = stand.cv3 if entry.stock == "C3" else stand.cv2  # C2f, C3k2: cv2 is the output conv
            head = (stand.cv1.conv.in_channels, last.conv.out_channels, len(stand.m),
                    *(_READ_BACK[a](stand) for a in entry.stock_args))
        else:
            head = (stand.conv.in_channels, stand.conv.out_channels)
        try:
            block = entry.cls(*head, *deepcopy(extra))
        except (TypeError, ValueError) as e:
            raise YamlConfigError(f"layer {i} ({name}) with args {extra!r}: {e}") from None
        block.np = sum(p.numel() for p in block.parameters())
        block.i, block.f, block.type = i, stand.f, _qualname(entry.cls)
        model[i] = block
    if verbose:
        _print_table(d, model)
    return model, save


def _leading_stock_args(args: list, k: int) -> list:
    """The first ``k`` YAML arguments after ``c2`` up to the first word or mapping (the kind and options)."""
    given = []
    for a in args[:k]:
        if isinstance(a, (str, dict)):
            break
        given.append(a)
    return given


def _print_table(d: dict, model: nn.Sequential) -> None:
    """Log the layer table ultralytics prints, with our blocks shown under their real names."""
    from ultralytics.utils import LOGGER as ULOG

    ULOG.info(f"\n{'':>3}{'from':>20}{'n':>3}{'params':>10}  {'module':<45}{'arguments':<30}")
    for (f, n, m, args), layer in zip(_layers(d), model):
        ULOG.info(f"{layer.i:>3}{f!s:>20}{n:>3}{layer.np:10.0f}  {layer.type:<45}{args!s:<30}")


# ------------------------------------------------------------------------------------------------ model and trainer
def _offline_aware_check_amp(model: nn.Module) -> bool:
    """ultralytics' AMP check, minus its download: offline without the reference weights, keep AMP on and say so.

    ultralytics checks AMP on CUDA by running its ``yolo26n.pt`` reference model, downloading it when missing; on an
    offline machine that is a network attempt and a time-out before every training.
    """
    from ultralytics.utils import ONLINE, WEIGHTS_DIR
    from ultralytics.utils.checks import check_amp

    on_cuda = next(model.parameters()).device.type == "cuda"
    if on_cuda and not ONLINE and not (Path(WEIGHTS_DIR) / "yolo26n.pt").is_file():
        LOGGER.warning("AMP check skipped: offline and no yolo26n.pt reference weights; AMP stays on (amp=False turns it off)")
        return True
    return check_amp(model)


# ------------------------------------------------------------------------------------------------ pretrained weights
def read_checkpoint(path: str | Path, key: str = "pretrained") -> nn.Module:
    """Load a checkpoint's model with ultralytics' own loader, after :func:`yolo_attn.transfer.check_checkpoint_path`.

    Args:
        path: Local ``.pt`` file.
        key: Argument name for messages (``pretrained``, ``weights``).

    Returns:
        The checkpoint's model (EMA weights when present, as ultralytics picks them).

    Raises:
        yolo_attn.transfer.TransferError: Missing file, URL, not a torch archive, or a torch file that holds no
            ultralytics model (a bare ``state_dict``, a torchvision model, ...).
    """
    from ultralytics.utils.checks import check_yolov5u_filename

    transfer.check_checkpoint_path(path, key)
    swapped = check_yolov5u_filename(str(path), verbose=False)
    if swapped != str(path):  # ultralytics would load (and download) this other file instead
        raise transfer.TransferError(
            f"{key}={path}: ultralytics reads this name as the original YOLOv5 repo's weights and would fetch "
            f"{Path(swapped).name} instead; if it is an ultralytics checkpoint, rename it (e.g. {Path(swapped).name})")
    try:
        model, _ = tasks.load_checkpoint(str(path))
    except (TypeError, AttributeError, KeyError, IndexError, RuntimeError, EOFError, OSError, ImportError,
            ModuleNotFoundError, ValueError) as e:
        first = (str(e).strip().splitlines() or [""])[0].replace("ERROR ❌️ ", "").strip()
        raise transfer.TransferError(f"{key}={path} is not an ultralytics/yolo_attn checkpoint ({type(e).__name__}: "
                                     f"{first[:200]}); pass weights/best.pt of a training run or e.g. yolov5nu.pt"
                                     ) from None
    if not isinstance(model, nn.Module) or not hasattr(model, "stride"):
        raise transfer.TransferError(f"{key}={path} is not an ultralytics/yolo_attn checkpoint (holds "
                                     f"{type(model).__name__}); pass weights/best.pt of a training run or yolov5nu.pt")
    return model


def _source_model(weights: Any) -> nn.Module:
    """The module ultralytics' ``DetectionModel.load`` takes its tensors from (EMA first, as it does)."""
    return (weights.get("ema") or weights["model"]) if isinstance(weights, dict) else weights


def load_pretrained(model: nn.Module, weights: Any, label: str, verbose: bool = True) -> transfer.TransferReport:
    """Move pretrained weights into ``model`` with ultralytics' transfer; check first, report after.

    The checkpoint must fit (:func:`yolo_attn.transfer.check_fits`: same family and scale), else nothing is loaded.
    ultralytics' ``DetectionModel.load`` then copies every tensor that matches by name and shape (and rebuilds the
    class outputs for another ``nc``); our blocks, seeing their stock tensors without their attention tensors, set
    their attention gains to 0 (``layer_scale: auto``). The per-layer report is logged through ultralytics' logger.

    Args:
        model: The ``DetectionModel`` to fill.
        weights: The checkpoint's model (or checkpoint dict), as ``DetectionModel.load`` takes it.
        label: How the user named the weights, for messages (``pretrained=yolov5su.pt``).
        verbose: Log the report.

    Returns:
        The :class:`yolo_attn.transfer.TransferReport`.
    """
    from ultralytics.utils import LOGGER as ULOG
    from ultralytics.utils import RANK

    source = _source_model(weights)
    transfer.check_fits(model, source, label)
    type(model).load(model, weights, verbose=False)  # the class's load: YOLO.load wraps this instance's
    name = label.split("=", 1)[-1]
    report = transfer.build_report(model, source, name)
    if verbose and RANK in {-1, 0}:
        for line in report.format().splitlines():
            ULOG.info(line)
    return report


class AttnDetectionTrainer(DetectionTrainer):
    """ultralytics' detection trainer, living in yolo_attn.

    Multi-GPU training pickles the trainer class into the DDP launch file; because this class lives in yolo_attn,
    every worker imports yolo_attn (registering our blocks) before it rebuilds the model from the YAML. Offline, the
    CUDA AMP check runs without its reference-weight download (:func:`_offline_aware_check_amp`). Pretrained weights
    (``pretrained=...pt``, or the model a ``.pt`` was loaded from) go through :func:`load_pretrained`: checked,
    transferred by ultralytics, reported by layer (``self.transfer_report``).
    """

    transfer_report: transfer.TransferReport | None = None

    def get_model(self, cfg: str | dict | None = None, weights: nn.Module | None = None, verbose: bool = True):
        """Build the detection model from ``cfg``; load ``weights`` with the transfer report.

        Args:
            cfg: Model config path or dict.
            weights: Pretrained model to load.
            verbose: Print model info and the transfer report.

        Returns:
            The ``DetectionModel``.
        """
        model = super().get_model(cfg=cfg, weights=None, verbose=verbose)
        if weights:
            pretrained = self.args.pretrained
            if not isinstance(pretrained, (str, Path)):  # the model a .pt was loaded from
                pretrained = getattr(_source_model(weights), "pt_path", None) or weights
            label = f"pretrained={transfer.describe(pretrained)}"
            self.transfer_report = load_pretrained(model, weights, label, verbose)
        return model

    def _setup_train(self) -> None:
        import ultralytics.engine.trainer as trainer_module

        original = trainer_module.check_amp
        trainer_module.check_amp = _offline_aware_check_amp
        try:
            super()._setup_train()
        finally:
            trainer_module.check_amp = original


def resolve_config(model: str | Path) -> str | Path:
    """Resolve a bare config name such as ``yolov5s-local.yaml`` to the config shipped with yolo_attn.

    Paths that exist (with or without the scale letter, as ultralytics resolves them) are returned unchanged.

    Args:
        model: A path or file name.

    Returns:
        The path to use.
    """
    if not isinstance(model, (str, Path)) or Path(model).suffix.lower() not in {".yaml", ".yml"}:
        return model
    p, unified = Path(model), unscaled(model)
    if p.exists() or unified.exists():
        return model
    if len(p.parts) == 1 and (CONFIG_DIR / unified.name).exists():
        return str(CONFIG_DIR / p.name)
    return model


def ensure_fonts() -> None:
    """Make ultralytics' plotting fonts resolve locally so train/val never wait on a font download.

    ultralytics looks for ``Arial.ttf`` / ``Arial.Unicode.ttf`` in its user config directory and downloads them when
    missing (a network attempt with a time-out on offline machines). Where they are missing we place a copy of
    matplotlib's bundled DejaVu Sans under those names; existing files are never touched.
    """
    from matplotlib import get_data_path
    from ultralytics.utils import USER_CONFIG_DIR

    src = Path(get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        dst = Path(USER_CONFIG_DIR) / name
        if not dst.exists() and src.exists():
            try:
                shutil.copyfile(src, dst)
            except OSError as e:  # read-only config dir: ultralytics falls back on its own
                LOGGER.debug(f"could not place offline font {dst}: {e}")


class YOLO(_UltralyticsYOLO):
    """ultralytics' ``YOLO`` with yolo_attn's configs and trainer.

    Bare config names (``"yolov5n-local.yaml"``) resolve to the configs shipped in ``yolo_attn/cfg``; detection
    training uses :class:`AttnDetectionTrainer` so multi-GPU (DDP) workers know our blocks.

    Args:
        model: Config YAML, checkpoint (``.pt``) or exported model path.
        task: Task override; detection is what yolo_attn configs build.
        verbose: Print model info on load.

    Examples:
        >>> model = YOLO("yolov5n-c3tr.yaml")
        >>> model.model.yaml["scale"]
        'n'
    """

    def __init__(self, model: str | Path = DEFAULT_MODEL, task: str | None = None, verbose: bool = False) -> None:
        ensure_fonts()
        model = resolve_config(model)
        if isinstance(model, (str, Path)) and Path(model).suffix.lower() in {".yaml", ".yml"} and not task:
            cfg = Path(model) if Path(model).exists() else None
            if cfg is not None:  # ultralytics guesses the task from the head before parsing: check it first
                check_output_head(tasks.yaml_model_load(cfg))
        super().__init__(model, task=task, verbose=verbose)

    def export(self, **kwargs: Any) -> str:
        """ultralytics' export, with a one-line refusal of what the format cannot honour (before writing anything)
        and of an artefact its runtime cannot load (removed): see :mod:`yolo_attn.export_checks`. Without
        ``dynamic=True`` the index plans are constants of the graph (:func:`~yolo_attn.attention.tiling.fixed_sizes`);
        with it they are computed in the graph from the input's size.

        Args:
            **kwargs: ultralytics export arguments (``format``, ``imgsz``, ``dynamic``, ``half``, ``int8``, ...).

        Returns:
            The exported file or folder.
        """
        check_export_request(kwargs, export_format_arguments())
        with fixed_sizes(not kwargs.get("dynamic", False)):  # one input size: the index plans are graph constants
            path = super().export(**kwargs)
        check_exported(path)
        return path

    @property
    def task_map(self) -> dict[str, dict[str, Any]]:
        """ultralytics' task map with our detection trainer."""
        mapping = dict(super().task_map)
        mapping["detect"] = {**mapping["detect"], "trainer": AttnDetectionTrainer}
        return mapping

    def load(self, weights: str | Path | dict | nn.Module = "yolov5nu.pt") -> YOLO:
        """ultralytics' ``load`` (transfer by name and shape) with checks first and a per-layer report after.

        A stock checkpoint loads into every shipped config; the attention then starts as an exact no-op. The report
        is logged and kept as ``self.transfer_report``.

        Args:
            weights: Local checkpoint path (never downloaded), checkpoint dict or model.

        Returns:
            ``self``.

        Raises:
            yolo_attn.transfer.TransferError: Missing or unreadable file, or a checkpoint of another family / scale.
        """
        if isinstance(weights, (str, Path)):
            read_checkpoint(weights, "weights")  # one-line errors before ultralytics (which would download)
        if not isinstance(self.model, nn.Module) or not hasattr(self.model, "load"):
            return super().load(weights)
        box: dict[str, transfer.TransferReport] = {}

        def reporting_load(w: Any, verbose: bool = True) -> None:
            box["report"] = load_pretrained(self.model, w, f"weights={transfer.describe(weights)}", verbose)

        self.model.load = reporting_load  # this instance only, for the duration of the call
        try:
            super().load(weights)
        finally:
            del self.model.load
        self.transfer_report = box.get("report")
        return self

    def train(self, trainer: Any = None, **kwargs: Any) -> Any:
        """ultralytics' ``train``; a ``pretrained=path`` is checked first (exists, readable, fits this model).

        Args:
            trainer: Custom trainer class (default :class:`AttnDetectionTrainer`).
            **kwargs: ultralytics train arguments.

        Returns:
            ultralytics' training metrics.
        """
        pretrained = kwargs.get("pretrained")
        if isinstance(pretrained, (str, Path)) and isinstance(self.model, nn.Module):
            transfer.check_fits(self.model, read_checkpoint(pretrained), f"pretrained={pretrained}")
        return super().train(trainer=trainer, **kwargs)


# ------------------------------------------------------------------------------- workflows (yolo_attn/workflows.py)
def check_dataset_local(data: str | Path) -> dict:
    """Parse a detection data YAML with ultralytics' own rules, failing instead of downloading missing images.

    Args:
        data: Data YAML path, or a dataset name ultralytics bundles (``coco.yaml``).

    Returns:
        ultralytics' resolved dataset dict.

    Raises:
        FileNotFoundError: When the YAML or its validation images are not on disk.
    """
    from ultralytics.data.utils import check_det_dataset

    ensure_fonts()
    return check_det_dataset(str(data), autodownload=False)


def export_format_arguments() -> dict[str, list[str]]:
    """ultralytics' export table: format argument (``onnx``, ``engine``, ...) -> the export arguments it accepts."""
    from ultralytics.engine.exporter import export_formats

    table = export_formats()
    return {fmt: list(args) for fmt, args in zip(table["Argument"], table["Arguments"]) if fmt not in ("-", "")}
