"""Export matrix: every shipped config x the formats people ship detectors in, with runtime parity.

Each cell exports one config (scale n) with ultralytics' exporter through :class:`yolo_attn.YOLO` and, where a
runtime for the format installs here, runs the file against PyTorch (the model as the exporter traces it: Conv +
BatchNorm fused) with :func:`yolo_attn.workflows.load_exported`. A cell holds the max |difference| over the
prediction tensor (boxes in pixels and class scores), or ``exported`` where no runtime runs here, or the one-line
reason the export or the run failed. The weights are drawn by :func:`randomise_weights` (stated scale), since
random-init detectors barely depend on their input.

Formats (:data:`CELLS`): ONNX at a fixed size and ``dynamic=True``, TorchScript ``dynamic=True``, OpenVINO
``dynamic=True``, ncnn, CoreML (conversion only: no runtime on Linux), TFLite (LiteRT) and TensorRT (``engine``,
CUDA only). Dynamic cells are run at two inputs (:data:`DYNAMIC_RUNS`), fixed ones at the export size.

Examples:
    >>> rows = export_matrix(["yolov5n-local.yaml"], cells=["onnx dynamic"], imgsz=64)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import importlib.util
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .report import header_notes, progress, write_markdown

__all__ = ["CELLS", "DYNAMIC_RUNS", "Cell", "export_cell", "export_matrix", "randomise_weights", "shipped_configs",
           "write_export_matrix"]


@dataclass(frozen=True)
class Cell:
    """One column of the matrix.

    Attributes:
        name: Column title.
        format: ultralytics ``format=``.
        kwargs: Further export arguments (``dynamic``, ``half``, ...).
        requires: Python module its converter needs; when missing the cell says so (with ``why``).
        why: Why that converter is not installed here.
    """

    name: str
    format: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    requires: str | None = None
    why: str = ""


#: The matrix columns.
CELLS = (
    Cell("onnx", "onnx"),
    Cell("onnx dynamic", "onnx", {"dynamic": True}),
    Cell("torchscript dynamic", "torchscript", {"dynamic": True}),
    Cell("openvino dynamic", "openvino", {"dynamic": True}, requires="openvino"),
    Cell("ncnn", "ncnn", requires="pnnx"),
    Cell("coreml (conversion)", "coreml", requires="coremltools"),
    Cell("tflite", "litert", requires="litert_torch",
         why="litert-torch 0.10 (ultralytics 8.4's TFLite/LiteRT converter) requires torch 2.14.1 and would replace "
             "torch 2.15; tensorflow 2.19 (onnx2tf route) would downgrade numpy 2.4 to 2.1"),
    Cell("engine (TensorRT)", "engine", {"dynamic": True, "batch": 4}, requires="tensorrt"),
    Cell("onnx half", "onnx", {"half": True}),
    Cell("openvino half", "openvino", {"half": True}, requires="openvino"),
    Cell("openvino int8", "openvino", {"int8": True}, requires="nncf", why="nncf (OpenVINO int8 calibration)"),
)
#: (batch, height, width) inputs of the dynamic cells; fixed cells run once at the export size.
DYNAMIC_RUNS = ((1, 256, 320), (2, 192, 256))


def shipped_configs() -> list[str]:
    """Every config shipped in ``yolo_attn/cfg`` at scale n (``yolov5n.yaml``, ``yolov5n-local.yaml``, ...,
    ``yolo11n-local.yaml``)."""
    from ..configs import shipped

    return shipped("n")


def randomise_weights(model: torch.nn.Module, seed: int = 0, gain: float = 1.4) -> torch.nn.Module:
    """Weights and batch-norm statistics at a stated scale where a detector's output moves with its input.

    Conv / Linear weights ``N(0, gain^2 / fan_in)``, their biases ``N(0, 0.5^2)``; norm scales ``U(0.5, 1.5)``,
    shifts ``N(0, 0.2^2)``; batch-norm running means ``N(0, 0.2^2)``, variances ``U(0.5, 2)``; every other
    parameter (relative position tables, global tokens, position embeddings) ``N(0, 1)``. At ``gain=1.4`` two
    random images move the boxes of every shipped config by 0.15-25 px and its class scores by 0.06-0.9, while
    float32 runtimes stay within ~2e-4 px of each other (statistics measured on random images instead make the head
    chaotic: float32 rounding alone then moves boxes by ~1e-2 px).

    Args:
        model: The model (modified in place).
        seed: Seed of the draws.
        gain: Weight scale.

    Returns:
        ``model`` in eval mode.

    Examples:
        >>> from yolo_attn import YOLO
        >>> randomise_weights(YOLO("yolov5n.yaml").model).training
        False
    """
    g = torch.Generator().manual_seed(seed)
    done = set()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.normal_(0, gain / m.weight[0].numel() ** 0.5, generator=g)
                if m.bias is not None:
                    m.bias.normal_(0, 0.5, generator=g)
            elif isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm)):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.2, generator=g)
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.running_mean.normal_(0, 0.2, generator=g)
                    m.running_var.uniform_(0.5, 2.0, generator=g)
            else:
                continue
            done |= {id(p) for p in m.parameters(recurse=False)}
        for p in model.parameters():
            if id(p) not in done:
                p.normal_(0, 1.0, generator=g)
    return model.eval()


def _reason(err: BaseException) -> str:
    """The first meaningful line of an exception, without ultralytics' decorations."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    text = (lines[0] if lines else type(err).__name__).replace("ERROR ❌️ ", "").replace("ERROR ❌ ", "")
    text = re.sub(r"(?<![\w.])/(?:[^\s/]+/)+([^\s/]+)", r"\1", text)  # a file of the run: its name, never the path
    return f"{type(err).__name__}: {text}"[:400]


def export_cell(weights: Path, cell: Cell, imgsz: int, reference: Callable[[torch.Tensor], torch.Tensor]) -> str:
    """Export one checkpoint in one cell's format and check it; the cell's text.

    Args:
        weights: Checkpoint (the export lands next to it).
        cell: The column.
        imgsz: Export size.
        reference: PyTorch prediction tensor of an input batch (the model the file is compared with).

    Returns:
        ``max |diff|`` (and the inputs run), ``exported`` (no runtime here), or ``failed: <reason>``.
    """
    from ..integration import YOLO
    from ..workflows import load_exported

    if cell.format == "engine" and not torch.cuda.is_available():
        return "needs CUDA: `yolo-attn export model=best.pt format=engine dynamic=True batch=4`"
    if cell.requires and importlib.util.find_spec(cell.requires) is None:
        return f"not installed: {cell.why or cell.requires}"
    kwargs = dict(cell.kwargs)
    if kwargs.get("int8"):  # calibration images: a tiny shapes set next to the checkpoint
        from ..data import make_shapes_dataset

        kwargs["data"] = str(make_shapes_dataset(weights.parent / "shapes", n_train=8, n_val=8, imgsz=imgsz))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = Path(YOLO(str(weights)).export(format=cell.format, imgsz=imgsz, **kwargs))
    except Exception as err:  # noqa: BLE001 - every failure becomes the cell's one-line reason
        return f"export failed: {_reason(err)}"
    if cell.format in ("coreml", "litert", "engine"):
        return "exported (no runtime here)"
    try:
        exported = load_exported(path)
    except Exception as err:  # noqa: BLE001
        return f"exported; runtime failed: {_reason(err)}"
    if kwargs.get("int8"):
        return _int8_agreement(exported, reference)
    runs = DYNAMIC_RUNS if exported.hw is None else ((1, *exported.hw),)
    worst = 0.0
    for i, (batch, h, w) in enumerate(runs):
        x = torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(i))
        try:
            expected = reference(x)
            got = torch.as_tensor(exported.run(x.numpy())).float()
        except Exception as err:  # noqa: BLE001
            return f"exported; run at {batch}x{h}x{w} failed: {_reason(err)}"
        if got.shape != expected.shape:
            return f"exported; output {tuple(got.shape)} != PyTorch {tuple(expected.shape)} at {batch}x{h}x{w}"
        worst = max(worst, float((got - expected).abs().max()))
    sizes = ", ".join(f"{b}x{h}x{w}" for b, h, w in runs)
    return f"{worst:.1e} ({sizes})"


def _int8_agreement(exported: Any, reference: Callable[[torch.Tensor], torch.Tensor]) -> str:
    """int8 files are judged by mAP on real data; with random weights, by how well they rank the class scores."""
    x = torch.rand(1, 3, *exported.hw, generator=torch.Generator().manual_seed(0))
    got = torch.as_tensor(exported.run(x.numpy())).float()[:, 4:].flatten()
    corr = float(torch.corrcoef(torch.stack([got, reference(x)[:, 4:].flatten()]))[0, 1])
    return f"int8: class-score corr {corr:.3f} (judge by mAP)"


def _cached_predictions(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> model(x)[0]`` computed once per input shape and seed-determined content (cells share inputs)."""
    cache: dict[tuple, torch.Tensor] = {}

    def predict(x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), float(x.flatten()[:16].sum()))
        if key not in cache:
            with torch.no_grad():
                cache[key] = model(x)[0]
        return cache[key]

    return predict


def export_matrix(
    configs: Iterable[str] | None = None,
    cells: Sequence[str] | None = None,
    imgsz: int = 160,
    workdir: str | Path | None = None,
    progress_bar: bool = True,
) -> list[dict[str, str]]:
    """Run the matrix.

    Args:
        configs: Config names (default: :func:`shipped_configs`).
        cells: Column names of :data:`CELLS` to run (default: all).
        imgsz: Export size (dynamic cells run at :data:`DYNAMIC_RUNS` too).
        workdir: Where the checkpoints and exports go (default: a temporary folder, removed after).
        progress_bar: Show a progress bar.

    Returns:
        One row per config: ``{"config": name, <cell name>: text, ...}``.
    """
    from ..integration import YOLO

    configs = list(configs or shipped_configs())
    chosen = [c for c in CELLS if cells is None or c.name in cells]
    unknown = sorted(set(cells or ()) - {c.name for c in CELLS})
    if unknown:
        raise ValueError(f"unknown matrix cells {unknown}; allowed: {[c.name for c in CELLS]}")
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="yolo-attn-matrix-"))
    rows = []
    try:
        items = [(cfg, cell) for cfg in configs for cell in chosen]
        current, reference, weights = None, None, None
        for cfg, cell in progress(items, "export matrix") if progress_bar else items:
            if cfg != current:
                current, folder = cfg, root / Path(cfg).stem
                folder.mkdir(parents=True, exist_ok=True)
                weights = folder / f"{Path(cfg).stem}-random.pt"  # not an ultralytics asset name (no download)
                yolo = YOLO(cfg)
                randomise_weights(yolo.model)
                yolo.save(weights)
                reference = _cached_predictions(copy.deepcopy(YOLO(str(weights)).model).float().eval().fuse())
                rows.append({"config": Path(cfg).stem})
            rows[-1][cell.name] = export_cell(weights, cell, imgsz, reference)
    finally:
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    return rows


def write_export_matrix(rows: Sequence[dict[str, str]], path: str | Path, command: str, imgsz: int) -> Path:
    """Write the matrix as markdown (machine, versions, command, legend, then the table).

    Args:
        rows: Rows from :func:`export_matrix`.
        path: Output ``.md``.
        command: The command that produced it.
        imgsz: Export size used.

    Returns:
        ``path``.
    """
    versions = []
    for name in ("onnx", "onnxruntime", "openvino", "ncnn", "pnnx", "coremltools", "nncf", "tensorrt", "litert_torch"):
        try:
            module = importlib.import_module(name)
            versions.append(f"{name} {getattr(module, '__version__', '?')}")
        except ImportError:
            versions.append(f"{name} not installed")
    notes = [
        *header_notes(command),
        "Converters: " + "; ".join(versions),
        f"Each config (scale n) with weights from `randomise_weights` (seed 0) is exported at {imgsz}x{imgsz} by "
        "ultralytics' exporter through `yolo_attn.YOLO`; the file is run in its runtime (ONNX Runtime, TorchScript, "
        "OpenVINO with `INFERENCE_PRECISION_HINT=f32`, ncnn) against PyTorch (Conv+BN fused, as exported) on "
        "`U(0, 1)` images. A number is the max |difference| over the prediction tensor (boxes in pixels, class "
        "scores), with the inputs (batch x H x W) it was measured on; dynamic files run at two sizes and batches. "
        "`exported (no runtime here)`: converted, no runtime on this machine. Otherwise the one-line reason.",
        "half: ultralytics converts ONNX to fp16 (float32 inputs/outputs kept) and stores OpenVINO weights in fp16; "
        "fp16 parity is held to the fp16 tolerance of `tests/test_export_formats.py` (2e-3 of the largest output), "
        "not 1e-3. int8 (OpenVINO + nncf, calibrated on 8 generated shapes images): raw differences say little, so "
        "the cell gives the correlation of the class scores with PyTorch; trained models are compared by mAP "
        "(`yolo-attn val`), as `tests/test_export_formats.py` does.",
    ]
    columns = ["config", *[c for c in rows[0] if c != "config"]] if rows else None
    rows, footnotes = _footnoted(rows)
    path = write_markdown(rows, path, "Export matrix", notes, columns)
    if footnotes:
        with Path(path).open("a") as f:
            f.write("\n" + "\n".join(f"[{i}] {text}  " for i, text in enumerate(footnotes, 1)) + "\n")
    return path


def _footnoted(rows: Sequence[dict[str, str]], limit: int = 48) -> tuple[list[dict[str, str]], list[str]]:
    """Cells longer than ``limit`` become ``<head> [n]``, the full text footnote ``n`` (equal texts share one)."""
    notes: list[str] = []
    out = []
    for row in rows:
        new = {}
        for key, text in row.items():
            if key != "config" and len(text) > limit:
                if text not in notes:
                    notes.append(text)
                head = text.split(":")[0]
                text = f"{head} [{notes.index(text) + 1}]"
            new[key] = text
        out.append(new)
    return out, notes
