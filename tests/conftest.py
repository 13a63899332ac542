"""Test isolation: no network, no writes outside temporary directories, fixed seeds.

Environment variables are set at import time, before any test module imports ultralytics, because ultralytics
reads them once at import.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

_CONFIG_DIR = Path(tempfile.mkdtemp(prefix="yolo_attn_cfg_"))
os.environ.update(
    YOLO_CONFIG_DIR=str(_CONFIG_DIR),
    YOLO_ATTN_DATA_DIR=str(_CONFIG_DIR / "data"),  # generated datasets never land in the user's data dir
    YOLO_OFFLINE="1",
    YOLO_AUTOINSTALL="0",
    YOLO_VERBOSE="False",
    MPLBACKEND="Agg",
)
os.environ.pop("ULTRALYTICS_SAFE_LOAD", None)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_CONFIG_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """Run a test on one torch thread (small ops on 2 cores), restoring the thread count afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory) -> Path:
    """A tiny generated detection dataset (32 train / 8 val images at 128 px); returns its data YAML."""
    from yolo_attn.data import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), n_train=32, n_val=8, imgsz=128, seed=0)


def shapes_images(n: int, imgsz: int, seed: int = 100):
    """``[n, 3, imgsz, imgsz]`` RGB floats in [0, 1]: images of the shapes distribution (as ultralytics feeds them)."""
    import numpy as np
    import torch

    from yolo_attn.data import render_image

    imgs = [np.ascontiguousarray(render_image(imgsz, seed=seed + i)[..., ::-1].transpose(2, 0, 1)) for i in range(n)]
    return torch.from_numpy(np.stack(imgs)).float() / 255.0


def randomize_detector(model, seed: int = 0, imgsz: int = 128):
    """Give an untrained detector outputs that depend on its input (and on its attention), in place; returns it.

    At initialisation activations shrink layer after layer and the Detect head's biases pin the class scores near
    zero: the outputs hardly change with the image (real image vs zeros: ~4e-5), so a parity or fusion check on such
    a model proves nothing. Here, with a seeded generator (the global RNG is untouched):

    - every BatchNorm's affine weight is drawn from U(0.5, 1.5) and its bias from N(0, 0.2);
    - its running statistics are recalibrated on 4 shapes images at ``imgsz`` (one train-mode forward, cumulative
      average), so every layer sees unit-scale activations;
    - the last conv of each Detect branch (box distribution and class logits) is drawn from N(0, 0.01), bias 0.

    Result (yolov5n-local at 128 px): boxes up to several hundred px, class scores spread over (0, 1), real image vs
    zeros differs by a large fraction of the output scale.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    with torch.no_grad():
        for m in norms:
            m.weight.uniform_(0.5, 1.5, generator=g)
            m.bias.normal_(0.0, 0.2, generator=g)
            m.reset_running_stats()
            m.momentum = None
        model.train()
        model(shapes_images(4, imgsz))
        model.eval()
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        head = model.model[-1]
        for branch in (*head.cv2, *head.cv3):
            branch[-1].weight.normal_(0.0, 0.01, generator=g)
            branch[-1].bias.zero_()
    return model


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for child Python processes: the isolated settings plus the repo on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


PYTHON = sys.executable
