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


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for child Python processes: the isolated settings plus the repo on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


PYTHON = sys.executable
