"""Export formats beyond ONNX (#13, items 2-3): OpenVINO with runtime parity (fixed and dynamic), half precision
against a stated fp16 tolerance, int8 compared by mAP, and one-line refusals of what a format cannot do.

Weights come from :func:`yolo_attn.bench.export_matrix.randomise_weights` (a random-init detector barely depends on
its input). The PyTorch side is the model as the exporter traces it (Conv + BatchNorm fused).
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
import warnings

import pytest
import torch

import yolo_attn
from yolo_attn import workflows
from yolo_attn.bench.export_matrix import randomise_weights
from yolo_attn.cli import entrypoint

import openvino  # noqa: F401  (the dev extra installs it, with nncf and ncnn: these tests never skip)

TOLERANCE = 1e-3  # fp32 runtimes: max |diff| over boxes (pixels) and class scores
#: fp16: max |diff| at most this fraction of the largest output (one fp16 step is ~1e-3 of a value; boxes are pixels)
FP16_RTOL = 2e-3
IMGSZ = 128


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _randomised(cfg, tmp_path):
    weights = tmp_path / f"{cfg.replace('.yaml', '')}-random.pt"  # not an ultralytics asset name: no download
    yolo = yolo_attn.YOLO(cfg)
    randomise_weights(yolo.model)
    yolo.save(weights)
    return weights, copy.deepcopy(yolo_attn.YOLO(str(weights)).model).float().eval().fuse()


@pytest.fixture(scope="module")
def local_random(tmp_path_factory):
    """One randomised yolov5n-local checkpoint and its fused PyTorch model, shared (tests copy the file)."""
    return _randomised("yolov5n-local.yaml", tmp_path_factory.mktemp("local"))


def _copy(checkpoint, tmp_path):
    return Path(shutil.copy(checkpoint, tmp_path / checkpoint.name))


def _max_diff(exported, reference, batch, h, w, seed=0):
    x = torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = reference(x)[0]
    got = torch.as_tensor(exported.run(x.numpy())).float()
    assert got.shape == expected.shape
    return float((got - expected).abs().max()), float(expected.abs().max())


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("cfg, dynamic", [
    ("yolov5n-window.yaml", True),  # window plans + relative position bias
    ("yolov5n-sinkhorn.yaml", True),  # learned blocks: ceil(N / b) follows the size
    ("yolov5n-local.yaml", False),  # fixed size, through the command: parity printed
])
def test_openvino_export_matches_pytorch(cfg, dynamic, tmp_path, capsys, local_random):
    if cfg == "yolov5n-local.yaml":
        weights, reference = _copy(local_random[0], tmp_path), local_random[1]
    else:
        weights, reference = _randomised(cfg, tmp_path)
    if dynamic:
        folder = _quiet(yolo_attn.YOLO(str(weights)).export, format="openvino", dynamic=True, imgsz=IMGSZ)
    else:
        assert entrypoint(["export", f"model={weights}", "format=openvino", f"imgsz={IMGSZ}"]) == 0
        assert f"OpenVINO vs PyTorch on a {IMGSZ}x{IMGSZ} input" in capsys.readouterr().out
        folder = weights.with_name(f"{weights.stem}_openvino_model")
    exported = workflows.load_exported(folder)
    assert exported.runtime == "OpenVINO" and exported.hw == (None if dynamic else (IMGSZ, IMGSZ))
    runs = [(1, 160, 224), (2, 96, 128)] if dynamic else [(1, IMGSZ, IMGSZ)]
    for batch, h, w in runs:
        diff, _ = _max_diff(exported, reference, batch, h, w)
        assert diff < TOLERANCE, (cfg, batch, h, w, diff)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_half_export_within_fp16_tolerance(fmt, tmp_path, local_random):
    weights, reference = _copy(local_random[0], tmp_path), local_random[1]
    fp16 = workflows.load_exported(_quiet(yolo_attn.YOLO(str(weights)).export, format=fmt, imgsz=IMGSZ, half=True))
    diff16, scale = _max_diff(fp16, reference, 1, IMGSZ, IMGSZ)
    assert diff16 < FP16_RTOL * scale, (fmt, diff16, scale)
    assert diff16 > 5 * TOLERANCE, "half=True did not reach the file (no fp16 rounding seen; fp32 gives < 2e-4)"


def test_torchscript_half_on_cpu_is_refused_in_one_line(tmp_path, capsys, local_random):
    weights = _copy(local_random[0], tmp_path)
    with pytest.raises(workflows.WorkflowError, match=r"half=True for format=torchscript needs a CUDA device"):
        yolo_attn.YOLO(str(weights)).export(format="torchscript", half=True, imgsz=IMGSZ)
    assert entrypoint(["export", f"model={weights}", "format=torchscript", "half=True", f"imgsz={IMGSZ}"]) == 2
    assert "half=True for format=torchscript needs a CUDA device" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [weights.name]  # nothing written


def test_ncnn_folder_ncnn_cannot_load_is_refused_and_removed(tmp_path):
    """pnnx leaves the plans' indexed gathers as ``Tensor.index`` layers, which ncnn lacks (docs/EXPORT.md: every
    sparse config): such a folder is removed with one line naming the layers. A folder ncnn can load is kept."""
    from yolo_attn.export_checks import check_exported

    header = "7767517\n2 2\nInput in0 0 1 in0\n"
    for name, layer, refused in [("bad", "Tensor.index", True), ("good", "ReLU", False)]:
        folder = tmp_path / f"{name}_ncnn_model"
        folder.mkdir()
        (folder / "model.ncnn.param").write_text(header + f"{layer} op_0 1 1 in0 out0\n")
        if refused:
            with pytest.raises(workflows.WorkflowError, match=r"ncnn has no layer for Tensor.index \(operators of"):
                check_exported(folder)
        else:
            check_exported(folder)
        assert folder.exists() != refused


def test_dynamic_refused_for_fixed_size_formats_before_writing(tmp_path, capsys, local_random):
    weights = _copy(local_random[0], tmp_path)
    with pytest.raises(workflows.WorkflowError, match=r"format=ncnn does not support dynamic=True.*onnx, openvino"):
        yolo_attn.YOLO(str(weights)).export(format="ncnn", dynamic=True, imgsz=IMGSZ)
    assert entrypoint(["export", f"model={weights}", "format=ncnn", "dynamic=True", f"imgsz={IMGSZ}"]) == 2
    err = capsys.readouterr().err
    assert "format=ncnn does not support dynamic=True" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [weights.name]


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_openvino_int8_compared_by_map(shapes_data, tmp_path, local_random):
    """int8 is judged by mAP on a validation set, not by raw differences.

    With random weights both mAPs are ~0 on the shapes set, so the comparison alone would be weak: the int8 file
    must also be really quantized (int8 FakeQuantize nodes) and rank the class scores like PyTorch does
    (correlation > 0.9 over every anchor and class), which another detector's scores do not (negative control).
    """
    import openvino as ov

    weights, reference = _copy(local_random[0], tmp_path), local_random[1]
    yolo = yolo_attn.YOLO(str(weights))
    folder = Path(_quiet(yolo.export, format="openvino", int8=True, data=str(shapes_data), imgsz=64))
    ops = {op.get_type_name() for op in ov.Core().read_model(str(next(folder.glob("*.xml")))).get_ops()}
    assert "FakeQuantize" in ops

    def map50_95(model):
        return _quiet(yolo_attn.YOLO(str(model), task="detect").val, data=str(shapes_data), imgsz=64, batch=8,
                      plots=False, verbose=False, project=str(tmp_path / "runs")).box.map

    assert abs(map50_95(folder) - map50_95(weights)) < 0.05
    int8 = workflows.load_exported(folder)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fp32 = reference(x)[0][:, 4:].flatten()
        other = randomise_weights(copy.deepcopy(reference), seed=1)(x)[0][:, 4:].flatten()
    scores = torch.as_tensor(int8.run(x.numpy()))[:, 4:].flatten().float()
    assert torch.corrcoef(torch.stack([scores, fp32]))[0, 1] > 0.9
    assert torch.corrcoef(torch.stack([other, fp32]))[0, 1] < 0.5


def test_parity_warns_when_a_runtime_computes_something_else(tmp_path, monkeypatch, capsys, local_random):
    """Seen with ncnn on the linear config (docs/EXPORT.md): the file loads and runs but is off by pixels."""
    weights = local_random[0]
    model = yolo_attn.YOLO(str(weights)).model.float().eval()

    def runner(offset):
        def run(x):
            with torch.no_grad():
                return model(torch.from_numpy(x))[0].numpy() + offset
        return run

    for offset, warned in [(0.0, False), (0.05 * IMGSZ, True)]:
        exported = workflows.ExportedModel("ncnn", runner(offset), (IMGSZ, IMGSZ), 1)
        monkeypatch.setattr(workflows, "load_exported", lambda _, e=exported: e)
        workflows.check_export_parity(weights, "any")
        assert ("WARNING: ncnn does not reproduce PyTorch" in capsys.readouterr().out) == warned
