"""The `yolo-attn` command line: grammar, errors, help, data/model resolution (fast; no training here)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from conftest import PYTHON, REPO, subprocess_env
from yolo_attn import integration, registered_blocks, workflows
from yolo_attn.cli import MODES, entrypoint, help_text, parse_args
from yolo_attn.data import data_dir, make_shapes_dataset


# ------------------------------------------------------------------------------------------------------- grammar
@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "epochs=3", "imgsz=64"], ("train", {"epochs": 3, "imgsz": 64})),
        (["train", "resume", "model=last.pt"], ("train", {"resume": True, "model": "last.pt"})),
        (["train", "imgsz", "=", "64", "lr0=", "0.02"], ("train", {"imgsz": 64, "lr0": 0.02})),  # spaces around '='
        (["train", "--epochs=2"], ("train", {"epochs": 2})),  # leading dashes tolerated, like `yolo`
        (["mode=val", "model=best.pt"], ("val", {"model": "best.pt"})),
        (["train", "device=0,1"], ("train", {"device": (0, 1)})),  # ultralytics' DDP spelling passes through
        (["export", "format=onnx", "half", "dynamic"], ("export", {"format": "onnx", "half": True, "dynamic": True})),
        (["train", "name=123"], ("train", {"name": "123"})),  # run names stay strings, as in ultralytics
        (["export", "parity=False"], ("export", {"parity": False})),
    ],
)
def test_parse_args_follows_ultralytics_grammar(argv, expected):
    assert parse_args(argv) == expected


def test_cfg_yaml_overrides_with_explicit_args_winning(tmp_path):
    cfg = tmp_path / "args.yaml"
    cfg.write_text(yaml.safe_dump({"epochs": 7, "imgsz": 96}))
    assert parse_args(["train", f"cfg={cfg}", "epochs=2"]) == ("train", {"epochs": 2, "imgsz": 96})


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "epoch=3"], "'epoch' is not a valid argument; did you mean epochs"),
        (["trian"], "'trian' is not a valid argument; did you mean train"),
        (["train", "epochs=abc"], "epochs"),
        (["train", "epochs"], "'epochs' needs a value"),
        (["train", "val", "x=1"], "'x' is not a valid argument"),
        (["epochs=3"], "missing mode"),
        (["train", "imgsz=[64,"], "bracket"),
        (["bench"], "bench needs one of: attention, models, accuracy"),
        (["val"], "val needs model="),
        (["predict", "model=missing.pt", "source=x.jpg"], "source=x.jpg"),
        (["val", "model=nothere.pt"], "never downloads weights"),
        (["train", "data=no/such/data.yaml", "epochs=1"], "data=no/such/data.yaml"),
    ],
)
def test_usage_errors_are_one_line_exit_2(argv, needle, capsys):
    assert entrypoint(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("yolo-attn: error: "), err
    assert needle in err
    assert "Traceback" not in err


def test_modes_table_has_every_mode():
    assert list(MODES) == ["train", "val", "predict", "export", "bench", "info", "show"]
    mode, args = parse_args(["predict", "show"])  # after a mode, `show` is ultralytics' bool flag again
    assert (mode, args) == ("predict", {"show": True})


def test_help_lists_configs_and_blocks(capsys):
    assert entrypoint(["help"]) == 0
    out = capsys.readouterr().out
    for cfg in integration.CONFIG_DIR.glob("*.yaml"):
        assert cfg.name in out
    assert registered_blocks(), "no blocks registered"
    for name in registered_blocks():
        assert name in out
    assert help_text() in out
    assert entrypoint([]) == 0  # no arguments: help, like `yolo`


def test_version(capsys):
    import yolo_attn

    assert entrypoint(["--version"]) == 0
    assert capsys.readouterr().out.strip() == yolo_attn.__version__


def test_device_without_cuda_is_a_clear_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(workflows.WorkflowError, match="device=0 asks for CUDA"):
        workflows._check_device(0)
    with pytest.raises(workflows.WorkflowError, match="device=0,1"):
        workflows._check_device("0,1")
    workflows._check_device("cpu")  # explicit CPU: no notice, no error
    assert capsys.readouterr().out == ""
    workflows._check_device(None)
    assert "running on CPU" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------- model and data
def test_default_model_falls_back_while_missing(monkeypatch):
    assert workflows.default_model() in {integration.DEFAULT_MODEL, workflows.FALLBACK_MODEL}
    monkeypatch.setattr(integration, "DEFAULT_MODEL", "yolov5n-notyetwritten.yaml")
    assert workflows.default_model() == workflows.FALLBACK_MODEL
    assert workflows.resolve_model(None) == workflows.FALLBACK_MODEL
    assert Path(workflows.resolve_model("yolov5n-c3tr.yaml")).parent == integration.CONFIG_DIR


def test_bundled_dataset_names_never_download():
    with pytest.raises(workflows.WorkflowError, match="never downloads datasets"):
        workflows.resolve_data("coco8.yaml")


def test_generated_yaml_is_used_as_is(shapes_data):
    assert workflows.resolve_data(shapes_data) == str(shapes_data)


def test_data_recipe_generates_into_user_data_dir(tmp_path, monkeypatch):
    """data/shapes.yaml's mechanism, at a tiny size: generated under $YOLO_ATTN_DATA_DIR, nothing in the repo."""
    monkeypatch.setenv("YOLO_ATTN_DATA_DIR", str(tmp_path / "userdata"))
    recipe = yaml.safe_load((REPO / "data" / "shapes.yaml").read_text())
    assert set(recipe["generator"]) == {"name", "n_train", "n_val", "imgsz", "seed", "max_objects"}
    recipe["generator"].update(n_train=4, n_val=2, imgsz=64)
    small = tmp_path / "repo" / "data" / "shapes.yaml"
    small.parent.mkdir(parents=True)
    small.write_text(yaml.safe_dump(recipe))

    out = Path(workflows.resolve_data(small))
    assert out == data_dir() / "shapes" / "shapes.yaml" and data_dir() == tmp_path / "userdata"
    assert len(list((out.parent / "images" / "train").glob("*.jpg"))) == 4
    assert not (small.parent / "images").exists()
    assert workflows.resolve_data(small) == str(out)  # reused


def test_data_recipe_works_with_plain_ultralytics(tmp_path, monkeypatch):
    """ultralytics runs the YAML's `download:` script, which only generates locally and repoints train/val."""
    from ultralytics.data.utils import check_det_dataset

    monkeypatch.setenv("YOLO_ATTN_DATA_DIR", str(tmp_path / "userdata"))
    recipe = yaml.safe_load((REPO / "data" / "shapes.yaml").read_text())
    recipe["generator"].update(n_train=3, n_val=2, imgsz=64)
    small = tmp_path / "shapes.yaml"
    small.write_text(yaml.safe_dump(recipe))
    d = check_det_dataset(str(small))
    assert Path(d["val"]) == tmp_path / "userdata" / "shapes" / "images" / "val"
    assert len(list(Path(d["train"]).glob("*.jpg"))) == 3
    assert d["names"] == {0: "circle", 1: "square", 2: "triangle", 3: "star", 4: "cross"}


def test_generator_is_deterministic_and_regenerates_cleanly(tmp_path):
    a = make_shapes_dataset(tmp_path / "a", n_train=5, n_val=2, imgsz=64, seed=3)
    b = make_shapes_dataset(tmp_path / "b", n_train=5, n_val=2, imgsz=64, seed=3)
    for fa in sorted((a.parent / "images").rglob("*.jpg")) + sorted((a.parent / "labels").rglob("*.txt")):
        assert fa.read_bytes() == (b.parent / fa.relative_to(a.parent)).read_bytes()
    labels = "".join(p.read_text() for p in (a.parent / "labels").rglob("*.txt"))
    assert labels.strip(), "no labels at all"
    make_shapes_dataset(tmp_path / "a", n_train=2, n_val=1, imgsz=64, seed=3)  # smaller: no stale files remain
    assert len(list((a.parent / "images" / "train").glob("*.jpg"))) == 2


# ------------------------------------------------------------------------------------------------ entry points
def test_module_and_script_entry_points_run(tmp_path):
    env = subprocess_env()
    for cmd in ([PYTHON, "-m", "yolo_attn.cli", "help"], [PYTHON, str(REPO / "scripts" / "train.py"), "help"]):
        r = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert "yolov5-c3tr.yaml" in r.stdout
    r = subprocess.run([PYTHON, str(REPO / "scripts" / "val.py"), "modle=x"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "did you mean" in r.stderr and "Traceback" not in r.stderr
