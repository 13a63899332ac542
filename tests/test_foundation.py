"""The registration seam: channel/depth inference at every scale, errors, checkpoints, DDP workers."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import ultralytics
import yolo_attn
from conftest import CONFIGS, PYTHON, subprocess_env
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import ROOT as ULTRA_ROOT
from yolo_attn.integration import YamlConfigError, register_block

SCALES = "nsmlx"
STOCK_V5 = ULTRA_ROOT / "cfg" / "models" / "v5" / "yolov5.yaml"


def _model_dict(path: Path, scale: str) -> dict:
    d = yaml.safe_load(Path(path).read_text())
    d["scale"] = scale
    return d


def _out_channels(model: nn.Module) -> list[int]:
    """Output channels of every layer but Detect, by running a small input through the model."""
    outs, hooks = {}, []
    for layer in model.model[:-1]:
        hooks.append(layer.register_forward_hook(lambda m, i, o, k=layer.i: outs.__setitem__(k, o.shape[1])))
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    return [outs[k] for k in sorted(outs)]


@pytest.mark.parametrize("scale", SCALES)
def test_c3tr_config_channels_match_stock_yolov5(scale):
    """Our block gets exactly what ultralytics' C3 gets in the same slot: c1, width-scaled c2, depth-scaled n."""
    ours = DetectionModel(_model_dict(CONFIGS / "yolov5-c3tr.yaml", scale), verbose=False)
    stock = DetectionModel(_model_dict(STOCK_V5, scale), verbose=False)
    assert _out_channels(ours) == _out_channels(stock)
    block, c3 = ours.model[8], stock.model[8]
    assert type(block).__name__ == "C3Attn" and type(c3).__name__ == "C3"
    assert block.cv1.conv.in_channels == c3.cv1.conv.in_channels
    assert block.cv3.conv.out_channels == c3.cv3.conv.out_channels
    assert len(block.m) == len(c3.m)  # depth-scaled repeats: 1 at n/s, 2 at m, 3 at l, 4 at x
    assert block.type == "yolo_attn.blocks.C3Attn" and block.i == 8 and block.f == -1


def test_plain_yolov5_config_equals_ultralytics():
    ours = DetectionModel(_model_dict(CONFIGS / "yolov5.yaml", "s"), verbose=False)
    stock = DetectionModel(_model_dict(STOCK_V5, "s"), verbose=False)
    assert [type(m).__name__ for m in ours.model] == [type(m).__name__ for m in stock.model]
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in stock.parameters())


@pytest.mark.parametrize("hw", [(640, 640), (320, 416)])
def test_c3tr_forward(hw):
    model = yolo_attn.YOLO("yolov5n-c3tr.yaml").model.eval()
    with torch.no_grad():
        y = model(torch.rand(1, 3, *hw))[0]
    n_anchors = sum((hw[0] // s) * (hw[1] // s) for s in (8, 16, 32))
    assert y.shape == (1, 84, n_anchors) and torch.isfinite(y).all()


def test_scale_letter_from_file_name():
    assert yolo_attn.YOLO(str(CONFIGS / "yolov5s-c3tr.yaml")).model.yaml["scale"] == "s"
    assert yolo_attn.YOLO("yolov5m-c3tr.yaml").model.yaml["scale"] == "m"  # bare name: shipped config


@pytest.mark.parametrize("folder", ["run45m", "env2x"])
def test_scale_letter_comes_from_the_file_name_not_the_folder(folder, tmp_path, monkeypatch):
    # ultralytics drops the scale letter with a regex over the whole path: "run45m/" became "run45/" and the config
    # "did not exist"; shipped configs live under the install folder, which may look like that too
    import yolo_attn.integration as integration

    cfg = tmp_path / folder / "cfg"
    cfg.mkdir(parents=True)
    for name in ("yolov5-local.yaml", "yolov5.yaml"):
        (cfg / name).write_bytes((CONFIGS / name).read_bytes())
    model = yolo_attn.YOLO(str(cfg / "yolov5s-local.yaml")).model
    assert model.yaml["scale"] == "s" and model.yaml["yaml_file"] == str(cfg / "yolov5s-local.yaml")
    monkeypatch.setattr(integration, "CONFIG_DIR", cfg)  # a bare name resolved in such an install folder
    assert ultralytics.YOLO(integration.resolve_config("yolov5n.yaml")).model.yaml["scale"] == "n"


def test_plain_ultralytics_yolo_builds_after_import():
    m = ultralytics.YOLO(str(CONFIGS / "yolov5s-c3tr.yaml"))
    assert type(m.model.model[8]).__name__ == "C3Attn"


class _Probe(nn.Module):
    """A third-party block: records what the seam passed to it."""

    def __init__(self, c1: int, c2: int, n: int = 1, tag: str = "", opts: dict | None = None) -> None:
        super().__init__()
        self.args = (c1, c2, n, tag, opts)
        self.conv = nn.Conv2d(c1, c2, 1)

    def forward(self, x):
        return self.conv(x)


def _probe_yaml(tmp_path: Path, layer: list) -> Path:
    d = _model_dict(CONFIGS / "yolov5.yaml", "")
    d.pop("scale")
    d["head"].insert(len(d["head"]) - 1, layer)  # a side branch before Detect: layer 24, consumed by nothing
    p = tmp_path / "yolov5m-probe.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def test_third_party_block_gets_inferred_args_from_non_minus_one_layer(tmp_path):
    register_block(_Probe)
    register_block(_Probe)  # twice: harmless
    layer = [6, 3, "_Probe", [1024, "dilated:2", {"window": 7}]]  # from a P4 layer, string that literal_eval rejects
    model = yolo_attn.YOLO(str(_probe_yaml(tmp_path, layer))).model
    c1, c2, n, tag, opts = model.model[24].args
    assert c1 == 384  # layer 6 output at scale m: 512 * 0.75
    assert c2 == 768  # 1024 * 0.75
    assert n == 2  # round(3 * 0.67)
    assert (tag, opts) == ("dilated:2", {"window": 7})


def test_register_block_rejects_name_clash():
    class Other(nn.Module):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_block(Other, name="C3Attn")
    with pytest.raises(ValueError, match="shadow"):
        register_block(Other, name="Conv")


def test_unknown_module_name_error(tmp_path):
    d = _model_dict(CONFIGS / "yolov5-c3tr.yaml", "n")
    d["backbone"][8][2] = "C3Atn"
    with pytest.raises(YamlConfigError) as e:
        DetectionModel(d, verbose=False)
    msg = str(e.value)
    assert "layer 8" in msg and "'C3Atn'" in msg and "C3Attn" in msg and "yolo_attn provides" in msg


def test_bad_block_args_name_layer():
    d = _model_dict(CONFIGS / "yolov5-c3tr.yaml", "n")
    d["backbone"][8][3] = ["wide"]
    with pytest.raises(YamlConfigError, match=r"layer 8 \(C3Attn\).*output channel count"):
        DetectionModel(d, verbose=False)


# ----------------------------------------------------------------------------------------- training and checkpoints
@pytest.fixture(scope="module")
def trained(tmp_path_factory, shapes_data) -> Path:
    project = tmp_path_factory.mktemp("runs")
    model = yolo_attn.YOLO("yolov5n-c3tr.yaml")
    model.train(data=str(shapes_data), epochs=1, imgsz=64, batch=8, workers=0, device="cpu", project=str(project),
                name="c3tr", exist_ok=True, plots=False, verbose=False)
    best = project / "c3tr" / "weights" / "best.pt"
    assert best.is_file()
    return best


def _run_child(*parts: str, **env: str) -> str:
    guard = textwrap.dedent("""
        import subprocess, sys
        _popen = subprocess.Popen.__init__
        def _no_pip(self, args, *a, **k):
            if "pip" in " ".join(map(str, args if isinstance(args, (list, tuple)) else [args])):
                raise AssertionError(f"AutoInstall attempted: {args}")
            _popen(self, args, *a, **k)
        subprocess.Popen.__init__ = _no_pip
    """)
    env.setdefault("YOLO_AUTOINSTALL", "1")  # prove the load needs no AutoInstall even where it is allowed
    r = subprocess.run([PYTHON, "-c", guard + "".join(textwrap.dedent(p) + "\n" for p in parts)], capture_output=True, text=True, timeout=300,
                       env=subprocess_env(**env))
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


CHILD_CHECK = """
    import torch
    m = model.model.eval()
    assert type(m.model[8]).__name__ == "C3Attn", type(m.model[8])
    with torch.no_grad():
        y = m(torch.rand(1, 3, 64, 64))[0]
    assert torch.isfinite(y).all()
    print("OK", "yolo_attn" in sys.modules)
"""


def test_checkpoint_loads_with_yolo_attn_yolo(trained):
    out = _run_child(f"from yolo_attn import YOLO\nmodel = YOLO({str(trained)!r})", CHILD_CHECK)
    assert "OK True" in out


def test_checkpoint_loads_with_plain_ultralytics_without_import(trained):
    code = f"""
        from ultralytics import YOLO
        assert "yolo_attn" not in sys.modules
        model = YOLO({str(trained)!r})
    """
    assert "OK True" in _run_child(code, CHILD_CHECK)  # unpickling imported the plugin


def test_checkpoint_loads_under_safe_load(trained):
    code = f"""
        import yolo_attn
        from ultralytics import YOLO
        from ultralytics.nn.tasks import _SafeLoad
        assert _SafeLoad.restricted()
        model = YOLO({str(trained)!r})
    """
    assert "OK True" in _run_child(code, CHILD_CHECK, ULTRALYTICS_SAFE_LOAD="1")


def test_checkpoint_retrains_with_stock_yolo(trained, shapes_data, tmp_path):
    """The trainer rebuilds the model from the YAML stored in the checkpoint; our blocks must resolve."""
    m = ultralytics.YOLO(str(trained))
    m.train(data=str(shapes_data), epochs=1, imgsz=64, batch=8, workers=0, device="cpu", project=str(tmp_path),
            name="again", plots=False, val=False, verbose=False)
    assert (tmp_path / "again" / "weights" / "last.pt").is_file()


# ------------------------------------------------------------------------------------------------------ DDP workers
@pytest.mark.slow
@pytest.mark.parametrize("trainer_cls", ["yolo_attn", "stock"])
def test_ddp_worker_script_builds_our_blocks(trainer_cls, shapes_data, tmp_path):
    """ultralytics' generated DDP script, run in a fresh interpreter, must rebuild our model from the YAML.

    The stock trainer is the control: its worker never imports yolo_attn and cannot resolve C3Attn.
    """
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.utils.dist import generate_ddp_file

    cls = yolo_attn.AttnDetectionTrainer if trainer_cls == "yolo_attn" else DetectionTrainer
    overrides = dict(model=str(CONFIGS / "yolov5n-c3tr.yaml"), data=str(shapes_data), epochs=1, imgsz=64, batch=8,
                     workers=0, device="cpu", project=str(tmp_path), name="ddp", plots=False, val=False)
    trainer = cls(overrides=overrides)
    assert isinstance(trainer.model, str)  # the worker builds the model from the YAML
    script = generate_ddp_file(trainer)
    try:
        # what torch.distributed.run would start: a fresh interpreter running the script
        r = subprocess.run([PYTHON, script], capture_output=True, text=True, timeout=300,
                           env=subprocess_env(PYTHONPATH=""))
    finally:
        Path(script).unlink(missing_ok=True)
        Path(script).with_suffix(".pt").unlink(missing_ok=True)
    if trainer_cls == "yolo_attn":
        assert r.returncode == 0, r.stdout + r.stderr
        assert (tmp_path / "ddp" / "weights" / "last.pt").is_file()
    else:
        assert r.returncode != 0 and "C3Attn" in r.stderr


def test_untested_ultralytics_version_is_named(monkeypatch, caplog):
    from yolo_attn import integration

    monkeypatch.setattr(ultralytics, "__version__", "9.1.0")
    with caplog.at_level("WARNING", logger="yolo_attn"):
        integration._check_version()
    assert "found 9.1.0" in caplog.text and "ultralytics>=8.4,<8.5" in caplog.text
    monkeypatch.delattr(integration.tasks, "parse_model")
    with pytest.raises(ImportError, match=r"lacks ultralytics\.nn\.tasks\.parse_model"):
        integration._check_version()
