"""What users do all day, as library functions: train, validate, predict, export (+ exported-model parity check).

The ``yolo-attn`` command (:mod:`yolo_attn.cli`) and ``scripts/*.py`` are thin wrappers over these functions. Every
keyword ultralytics accepts passes through unchanged; what yolo_attn adds is

- model names resolve to the configs shipped in ``yolo_attn/cfg`` and train with our trainer (:class:`yolo_attn.YOLO`);
- ``data`` defaults to the synthetic shapes dataset, generated locally on first use (:func:`resolve_data`);
- nothing is downloaded: a missing weights file or dataset is an error (:class:`WorkflowError`), never a download;
- a one-line notice when training falls back to the CPU;
- after an ONNX, TorchScript, OpenVINO or ncnn export, the exported file is run against PyTorch on the same input
  (:func:`check_export_parity`; dynamic exports also at a second size and batch).

Examples:
    >>> from yolo_attn import workflows
    >>> best = workflows.train(epochs=1, imgsz=64)  # doctest: +SKIP
    >>> workflows.export(best, format="onnx")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml

from . import integration
from .checks import (
    _WEIGHT_SUFFIXES,
    WorkflowError,
    check_imgsz,
    check_labels,
    load_model,
)
from .configs import unscaled
from .data import shapes_dataset
from .integration import YOLO
from .transfer import check_checkpoint_path

__all__ = [
    "FALLBACK_MODEL",
    "SHAPES_TRAIN_DEFAULTS",
    "WorkflowError",
    "check_export_parity",
    "check_imgsz",
    "check_labels",
    "ExportedModel",
    "default_model",
    "export",
    "export_formats",
    "load_exported",
    "load_model",
    "predict",
    "resolve_data",
    "resolve_model",
    "train",
    "val",
]

FALLBACK_MODEL = "yolov5n-c3tr.yaml"  # used while integration.DEFAULT_MODEL is not shipped
SHAPES_TRAIN_DEFAULTS = {"epochs": 30, "imgsz": 320, "batch": 16}  # small, CPU-friendly; explicit keys win
PARITY_FORMATS = ("onnx", "torchscript", "openvino", "ncnn")


def _say(msg: str) -> None:
    print(f"yolo-attn: {msg}", flush=True)


# ------------------------------------------------------------------------------------------------------- resolving
def default_model() -> str:
    """The config ``yolo-attn train`` uses without ``model=``: ``integration.DEFAULT_MODEL`` when shipped.

    Returns:
        A bare config name that :func:`yolo_attn.integration.resolve_config` resolves.
    """
    name = integration.DEFAULT_MODEL
    return name if (integration.CONFIG_DIR / unscaled(name)).exists() else FALLBACK_MODEL


def resolve_model(model: str | Path | None) -> str:
    """Check a ``model=`` value without downloading anything.

    Configs (``.yaml``) resolve like :class:`yolo_attn.YOLO` does (shipped configs by bare name, then ultralytics'
    own configs); any other value must be an existing file (checkpoint or exported model).

    Args:
        model: Config name/path, checkpoint or exported model; None for :func:`default_model`.

    Returns:
        The value to hand to :class:`yolo_attn.YOLO`.

    Raises:
        WorkflowError: When a weights file does not exist (ultralytics would try to download it).
    """
    if model is None or model == "":
        return default_model()
    model = str(model)
    if "://" in model:
        raise WorkflowError(f"model={model} is a URL; yolo-attn never downloads, pass a local file")
    if Path(model).suffix.lower() in {".yaml", ".yml"}:
        return str(integration.resolve_config(model))
    if not Path(model).exists():
        hint = f" (train one from a config first, e.g. model={default_model()})" if Path(model).suffix in _WEIGHT_SUFFIXES else ""
        raise WorkflowError(f"model={model}: no such file; yolo-attn never downloads weights{hint}")
    return model


def _load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise WorkflowError(f"data={path}: cannot read YAML ({e})") from None
    if not isinstance(data, dict):
        raise WorkflowError(f"data={path}: expected a mapping with train/val/names, got {type(data).__name__}")
    return data


def resolve_data(data: str | Path | None) -> str:
    """Turn a ``data=`` value into a local data YAML, generating the shapes dataset where asked, downloading nothing.

    - None: the synthetic shapes dataset with default parameters, generated on first use under
      :func:`yolo_attn.data.data_dir`.
    - A data YAML with a ``generator:`` block whose images are not there yet (``data/shapes.yaml``): that dataset,
      generated the same way (the generated dataset's own YAML, with an absolute ``path:``, is used as is).
    - Any other data YAML (COCO, VOC, yours; also ultralytics' bundled names such as ``coco.yaml``): used as is, but
      its images must already be on disk; ultralytics would otherwise start a download.

    Args:
        data: Path or name of a data YAML, or None.

    Returns:
        Path of the data YAML to hand to ultralytics.

    Raises:
        WorkflowError: When the dataset's images are not on disk.
    """
    if data is None or data == "":
        return str(shapes_dataset())
    data = str(data)
    p = Path(data).expanduser()
    if p.is_file() and p.suffix.lower() in {".yaml", ".yml"}:
        d = _load_yaml(p)
        if "generator" in d and not _val_images_present(p, d):  # a recipe (data/shapes.yaml), not yet generated
            gen = d["generator"]
            if not isinstance(gen, dict):
                raise WorkflowError(f"data={data}: 'generator:' must be a mapping of shapes parameters")
            gen = dict(gen)
            try:
                return str(shapes_dataset(gen.pop("name", "shapes"), **gen))
            except (TypeError, ValueError) as e:
                raise WorkflowError(f"data={data}: {e}") from None
    try:
        integration.check_dataset_local(data)
    except FileNotFoundError as e:
        first = str(e).strip().splitlines()[0]
        raise WorkflowError(f"data={data}: {first} (yolo-attn never downloads datasets; see the Data section of README.md)") from None
    except (SyntaxError, TypeError, ValueError) as e:
        raise WorkflowError(f"data={data}: {str(e).strip().splitlines()[0]}") from None
    return data


def _val_images_present(yaml_path: Path, d: dict) -> bool:
    root = Path(str(d.get("path") or yaml_path.parent)).expanduser()
    val = d.get("val")
    return isinstance(val, str) and (root / val).exists()


def _is_shapes(data_yaml: str) -> bool:
    p = Path(data_yaml)
    return p.is_file() and "generator" in _load_yaml(p)


def _cuda_requested(device: Any) -> bool:
    if device is None or device == "":
        return False
    s = str(device).lower().replace("cuda:", "").strip("()[] ")
    return s not in {"cpu", "mps"} and not s.startswith("mps")


def _cuda_indices(device: Any) -> list[int]:
    """CUDA device indices named by a ``device=`` value (``0``, ``"0,1"``, ``(0, 1)``, ``"cuda:1"``; ``-1`` = auto)."""
    s = str(device).lower().replace("cuda:", "").strip("()[] ")
    return [int(p) for p in (x.strip() for x in s.split(",")) if p.isdigit()]


def _check_device(device: Any) -> None:
    """One-line CPU notice when CUDA is unavailable; a clear error when a CUDA device was asked for but is missing."""
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        missing = [i for i in _cuda_indices(device) if i >= count]
        if missing:
            raise WorkflowError(f"device={device} asks for CUDA device {missing[0]}, but this machine has {count} "
                                f"(indices 0..{count - 1}); use e.g. device=0 or device=cpu")
        return
    if _cuda_requested(device):
        raise WorkflowError(f"device={device} asks for CUDA, but torch.cuda.is_available() is False; use device=cpu")
    if device is None or device == "":
        _say("CUDA is not available: running on CPU (slow; on a GPU machine pass device=0, AMP is on by default)")


# ---------------------------------------------------------------------------------------------------------- modes
def train(model: str | Path | None = None, data: str | Path | None = None, **overrides: Any) -> Path:
    """Train a detector; with no arguments, the default attention config on the synthetic shapes dataset.

    ``resume=True`` with ``model=.../last.pt`` continues an interrupted run (ultralytics' rules: most arguments come
    from the checkpoint). On the shapes dataset :data:`SHAPES_TRAIN_DEFAULTS` apply unless given.

    Args:
        model: Config (``yolov5n-c3tr.yaml``), checkpoint, or ``last.pt`` to resume; None for :func:`default_model`.
        data: Data YAML; None for the shapes dataset (see :func:`resolve_data`).
        **overrides: Any ultralytics train argument (``epochs``, ``imgsz``, ``device``, ``batch``, ``project``, ...);
            ``pretrained=path.pt`` fine-tunes from that checkpoint (e.g. a stock ``yolov5su.pt``), with a per-layer
            transfer report; it must exist locally and fit the model (:mod:`yolo_attn.transfer`).

    Returns:
        Path of ``best.pt`` (``last.pt`` when no best was written).
    """
    resume = overrides.get("resume")
    if resume and not isinstance(resume, bool):  # resume=path/to/last.pt: ultralytics' other spelling
        model, overrides["resume"] = resume, True
    model = resolve_model(model)
    if isinstance(overrides.get("pretrained"), (str, Path)) and not resume:  # before any data work; never download
        check_checkpoint_path(overrides["pretrained"], "pretrained")
    if resume:
        if Path(model).suffix not in _WEIGHT_SUFFIXES:
            raise WorkflowError(f"resume needs model=path/to/last.pt of the interrupted run, got model={model}")
        if data is not None:
            overrides["data"] = resolve_data(data)
    else:
        overrides["data"] = resolve_data(data)
        if _is_shapes(overrides["data"]):
            overrides = {**SHAPES_TRAIN_DEFAULTS, **overrides}
        check_labels(overrides["data"])
    _check_device(overrides.get("device"))
    yolo = load_model(model)
    if not resume:
        check_imgsz(overrides.get("imgsz"), yolo)
    yolo.train(**overrides)
    trainer = yolo.trainer
    best = Path(trainer.best) if Path(trainer.best).exists() else Path(trainer.last)
    _say(f"best weights: {best}")
    _say(f"next: yolo-attn val model={best}  |  yolo-attn export model={best} format=onnx")
    return best


def val(model: str | Path, data: str | Path | None = None, **overrides: Any) -> Any:
    """Validate a checkpoint (``data`` defaults to the dataset it was trained on).

    Args:
        model: Checkpoint (or exported model) path.
        data: Data YAML; None for the checkpoint's own.
        **overrides: Any ultralytics val argument.

    Returns:
        ultralytics' metrics object (``.box.map`` is mAP50-95).
    """
    yolo = load_model(resolve_model(model))
    if data is not None:
        overrides["data"] = resolve_data(data)
    elif yolo.overrides.get("data"):
        overrides["data"] = resolve_data(yolo.overrides["data"])
    else:
        raise WorkflowError(f"model={model} does not record its dataset; pass data=path/to/data.yaml")
    check_labels(overrides["data"], splits=(overrides.get("split") or "val",))
    check_imgsz(overrides.get("imgsz"), yolo)
    _check_device(overrides.get("device"))
    metrics = yolo.val(**overrides)
    box = getattr(metrics, "box", None)
    if box is not None:
        _say(f"mAP50-95 {box.map:.4f}  mAP50 {box.map50:.4f}  results in {metrics.save_dir}")
    return metrics


def predict(model: str | Path, source: str | Path | None = None, **overrides: Any) -> list:
    """Run a detector on images, folders, videos or globs and save annotated results (``save=True`` by default).

    Args:
        model: Checkpoint or exported model path.
        source: What to run on.
        **overrides: Any ultralytics predict argument (``conf``, ``save_txt``, ``imgsz``, ...).

    Returns:
        ultralytics' list of ``Results``.
    """
    if source is None or source == "":
        raise WorkflowError("predict needs source=<image, folder, video or glob>")
    if "://" not in str(source) and not any(c in str(source) for c in "*?") and not Path(str(source)).exists() \
            and not str(source).isdigit():
        raise WorkflowError(f"source={source}: no such file or directory")
    overrides.setdefault("save", True)
    yolo = load_model(resolve_model(model))
    check_imgsz(overrides.get("imgsz"), yolo)
    results = yolo.predict(source=source, **overrides)
    n = sum(len(r.boxes) for r in results if getattr(r, "boxes", None) is not None)
    where = f", saved to {results[0].save_dir}" if results and overrides.get("save") else ""
    _say(f"{n} boxes on {len(results)} image(s){where}")
    return results


def export(model: str | Path, format: str = "onnx", parity: bool = True, **overrides: Any) -> tuple[Path, float | None]:
    """Export a checkpoint with ultralytics; for ONNX, TorchScript, OpenVINO and ncnn, check the file against PyTorch.

    Args:
        model: Checkpoint path (``best.pt``).
        format: Any ultralytics export format (``onnx``, ``torchscript``, ``openvino``, ...).
        parity: Run the exported file and PyTorch on the same input and print the max difference
            (:data:`PARITY_FORMATS`; dynamic exports at two sizes).
        **overrides: Any ultralytics export argument (``imgsz``, ``half``, ``dynamic``, ``opset``, ...).

    Returns:
        ``(exported file, max abs difference or None)``.
    """
    model = resolve_model(model)
    if Path(model).suffix not in _WEIGHT_SUFFIXES:
        raise WorkflowError(f"export needs a PyTorch checkpoint (model=best.pt), got model={model}")
    formats = export_formats()
    if str(format).lower() not in formats:
        raise WorkflowError(f"format={format} is not an export format; allowed: {', '.join(formats)}")
    yolo = load_model(model)
    check_imgsz(overrides.get("imgsz"), yolo)
    if overrides.get("data"):  # int8 calibration images: a shapes recipe is generated, nothing is downloaded
        overrides["data"] = resolve_data(overrides["data"])
    f = _export_atomically(yolo, Path(model), format=format, **overrides)
    _say(f"exported {f}")
    diff = None
    if parity and str(format).lower() in PARITY_FORMATS:
        if _is_int8(overrides):
            _say(f"int8: raw output differences say little; compare mAP instead: yolo-attn val model={f} data=... "
                 f"and yolo-attn val model={model} data=...")
        else:
            diff = check_export_parity(model, f, imgsz=overrides.get("imgsz"))
    return f, diff


def _is_int8(overrides: dict) -> bool:
    """Whether the export arguments ask for int8 (``int8=True``, ultralytics' older spelling, or ``quantize=8``)."""
    quantize = overrides.get("quantize")
    return bool(overrides.get("int8")) or str(quantize).lower() in {"8", "int8", "w8a8"}


def export_formats() -> list[str]:
    """The ``format=`` values ultralytics' exporter accepts (``onnx``, ``torchscript``, ``openvino``, ...)."""
    from ultralytics.engine.exporter import export_formats as formats

    return [f for f in formats()["Argument"] if f not in ("-", "")]


def _export_atomically(yolo: YOLO, weights: Path, **kwargs: Any) -> Path:
    """Export from a copy of the checkpoint in a scratch folder next to it; move the result into place on success.

    ultralytics writes ``best.onnx`` (or ``best_openvino_model/``, ...) next to the checkpoint, truncating an existing
    file first: a failure midway would destroy the user's previous export. Here the previous export is replaced only
    by a complete new one.
    """
    scratch = Path(tempfile.mkdtemp(prefix=".yolo-attn-export-", dir=weights.parent))
    try:
        copy = scratch / weights.name
        try:
            os.link(weights, copy)
        except OSError:
            shutil.copy2(weights, copy)
        yolo.ckpt_path = str(copy)
        if getattr(yolo.model, "pt_path", None):
            yolo.model.pt_path = str(copy)
        out = Path(yolo.export(**kwargs))
        final = weights.parent / out.name
        if final.is_dir() and out.is_dir():
            shutil.rmtree(final)
        os.replace(out, final)
        return final
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------- parity
@dataclass(frozen=True)
class ExportedModel:
    """An exported file loaded in its runtime, for parity checks.

    Attributes:
        runtime: Runtime name (``ONNX Runtime``, ``TorchScript``, ``OpenVINO``, ``ncnn``).
        run: ``[B, 3, H, W]`` float32 array -> first output as a float32 array.
        hw: The fixed input size ``(H, W)``, or None when the file accepts any size (dynamic export).
        max_batch: Largest batch the file accepts at once (None: any).
    """

    runtime: str
    run: Callable[[np.ndarray], np.ndarray]
    hw: tuple[int, int] | None
    max_batch: int | None


def _static_hw(dims: Any) -> tuple[int, int] | None:
    hw = [d for d in list(dims)[2:4] if isinstance(d, int) and d > 0]
    return tuple(hw) if len(hw) == 2 else None


def _load_onnx(path: Path) -> ExportedModel:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as PyTorch, and as OpenVINO below
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    dtype = np.float16 if "float16" in inp.type else np.float32
    batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
    run = lambda x: sess.run(None, {inp.name: x.astype(dtype)})[0]  # noqa: E731
    return ExportedModel("ONNX Runtime", run, _static_hw(inp.shape), batch)


def _load_torchscript(path: Path) -> ExportedModel:
    extra = {"config.txt": ""}
    ts = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    meta = json.loads(extra["config.txt"] or "{}")
    half = meta.get("args", {}).get("quantize") == 16 or bool(meta.get("args", {}).get("half"))

    def run(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x)
        with torch.no_grad():
            return _first_tensor(ts(t.half() if half else t)).float().numpy()

    dynamic = bool(meta.get("args", {}).get("dynamic"))
    hw = None if dynamic else _input_hw(meta.get("imgsz"), 640)
    return ExportedModel("TorchScript", run, hw, None if dynamic else int(meta.get("batch", 1)))


def _load_openvino(xml: Path) -> ExportedModel:
    import openvino as ov

    core = ov.Core()
    core.set_property({"ENABLE_MMAP": False})  # a mapped .bin rewritten by a later export would crash (SIGBUS)
    model = core.read_model(str(xml))
    # f32: on CPUs with bf16 units OpenVINO otherwise computes in bf16 by default (~1e-2 relative error)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                 "INFERENCE_NUM_THREADS": torch.get_num_threads()})
    shape = model.inputs[0].get_partial_shape()
    dims = [d.get_length() if d.is_static else None for d in shape]
    return ExportedModel("OpenVINO", lambda x: compiled(x)[compiled.output(0)], _static_hw(dims), dims[0])


def _load_ncnn(folder: Path) -> ExportedModel:
    import ncnn

    net = ncnn.Net()
    if net.load_param(str(folder / "model.ncnn.param")) or net.load_model(str(folder / "model.ncnn.bin")):
        raise WorkflowError(f"ncnn cannot load {folder} (an operator of the graph is not supported by ncnn)")
    if not net.input_names():
        raise WorkflowError(f"ncnn cannot load {folder}: its graph uses operators ncnn does not implement")
    meta = yaml.safe_load((folder / "metadata.yaml").read_text()) if (folder / "metadata.yaml").is_file() else {}

    def run(x: np.ndarray) -> np.ndarray:
        ex = net.create_extractor()
        ex.input(net.input_names()[0], ncnn.Mat(np.ascontiguousarray(x[0])))
        return np.asarray(ex.extract(net.output_names()[0])[1])[None]

    return ExportedModel("ncnn", run, _input_hw(meta.get("imgsz"), 640), 1)


def load_exported(exported: str | Path) -> ExportedModel:
    """Load an exported ONNX file, TorchScript file, OpenVINO folder or ncnn folder in its runtime.

    Args:
        exported: ``.onnx``, ``.torchscript``, ``*_openvino_model/`` or ``*_ncnn_model/``.

    Returns:
        The :class:`ExportedModel`.

    Raises:
        WorkflowError: For other formats (no runtime for them here) or a graph the runtime cannot load.

    Examples:
        >>> load_exported("best.onnx").runtime  # doctest: +SKIP
        'ONNX Runtime'
    """
    path = Path(exported)
    if path.suffix == ".onnx":
        return _load_onnx(path)
    if path.suffix == ".torchscript":
        return _load_torchscript(path)
    if path.is_dir() and sorted(path.glob("*.xml")):
        return _load_openvino(sorted(path.glob("*.xml"))[0])
    if path.is_dir() and (path / "model.ncnn.param").is_file():
        return _load_ncnn(path)
    raise WorkflowError(f"no parity runtime for {path.name}; parity is checked for {', '.join(PARITY_FORMATS)}")


def _first_tensor(out: Any) -> torch.Tensor:
    while isinstance(out, (list, tuple)):
        out = out[0]
    if isinstance(out, dict):
        out = next(iter(out.values()))
    if isinstance(out, np.ndarray):
        out = torch.from_numpy(out)
    return out


def _input_hw(imgsz: Any, fallback: Any) -> tuple[int, int]:
    size = imgsz if imgsz is not None else fallback
    if isinstance(size, int):
        return size, size
    h, w = (list(size) * 2)[:2]
    return int(h), int(w)


def _shapes_batch(batch: int, h: int, w: int, seed: int) -> np.ndarray:
    """Synthetic shapes images as ``[batch, 3, h, w]`` RGB floats in [0, 1], as ultralytics preprocesses them."""
    import cv2

    from .data import render_image

    images = [cv2.resize(render_image(max(h, w), seed=seed + i), (w, h)) for i in range(batch)]
    chw = [np.ascontiguousarray(im[..., ::-1].transpose(2, 0, 1)) for im in images]
    return np.stack(chw).astype(np.float32) / 255.0


def check_export_parity(weights: str | Path, exported: str | Path, imgsz: Any = None, seed: int = 0) -> float:
    """Run an exported file (ONNX Runtime, TorchScript, OpenVINO, ncnn) and the PyTorch checkpoint on the same input.

    The input is a synthetic shapes image at the exported input size, as ``[1, 3, H, W]`` RGB floats in [0, 1]
    (what ultralytics' preprocessing gives for an image already at that size). A file exported with
    ``dynamic=True`` is also run at a second size and batch 2 (``H + 2 * stride`` x ``W + stride``), so a graph that
    only fits its export size fails here. Compared: the decoded prediction tensor ``[B, 4 + nc, anchors]``; one line
    per input is printed. OpenVINO runs with ``INFERENCE_PRECISION_HINT=f32`` (its CPU default may be bf16).

    Args:
        weights: The PyTorch checkpoint that was exported.
        exported: The exported file or folder.
        imgsz: Input size when the exported file does not fix it (dynamic); defaults to the checkpoint's.
        seed: Seed of the input images.

    Returns:
        Max absolute difference between the outputs over all inputs.
    """
    exported = load_exported(exported)
    model = YOLO(str(weights)).model.float().eval()
    h, w = exported.hw or _input_hw(imgsz, model.args.get("imgsz", 640))
    stride = int(torch.as_tensor(model.stride).max())
    inputs = [(1, h, w)] + ([(2, h + 2 * stride, w + stride)] if exported.hw is None else [])
    worst = 0.0
    for batch, ih, iw in inputs:
        x = _shapes_batch(batch, ih, iw, seed)
        with torch.no_grad():
            ref = _first_tensor(model(torch.from_numpy(x))).float().numpy()
        got = np.asarray(_first_tensor(exported.run(x)), dtype=np.float32)
        if ref.shape != got.shape:
            raise WorkflowError(f"{exported.runtime} output shape {got.shape} != PyTorch output shape {ref.shape}")
        diff = float(np.abs(ref - got).max())
        worst = max(worst, diff)
        shape = f"{ih}x{iw}" if batch == 1 else f"batch-{batch} {ih}x{iw}"
        scale = float(np.abs(ref).max())
        _say(f"{exported.runtime} vs PyTorch on a {shape} input: max |diff| = {diff:.3g} (outputs up to {scale:.3g})")
        if diff > 1e-2 * max(scale, 1.0):  # beyond fp16 rounding too: the runtime computes something else
            _say(f"WARNING: {exported.runtime} does not reproduce PyTorch (difference {diff / max(scale, 1.0):.1%} of "
                 "the largest output); do not deploy this file without checking it")
    return worst
