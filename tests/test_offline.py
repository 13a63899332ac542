"""Offline-clean: train, val, predict and export make no network attempt at all (no connection, no name lookup).

Every socket entry point that can reach the network is replaced by a recorder that refuses; the tests assert the
record is empty. In-process with the test environment (YOLO_OFFLINE=1), and in a fresh process that runs the command
as a user would: no YOLO_OFFLINE in the environment, a fresh ultralytics config dir (no fonts yet), guard installed
before anything is imported.
"""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from conftest import PYTHON, subprocess_env
from yolo_attn.cli import entrypoint

pytestmark = pytest.mark.slow

_NAMES = ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "create_connection")


def _guard(monkeypatch) -> list[str]:
    attempts: list[str] = []

    def refuse(name):
        def f(*args, **kwargs):
            attempts.append(f"{name}{args[:2]!r}")
            raise OSError(f"network disabled in test: {name}{args[:2]!r}")

        return f

    for name in _NAMES:
        monkeypatch.setattr(socket, name, refuse(name))
    for name in ("connect", "connect_ex"):
        original = getattr(socket.socket, name)

        def method(self, address, _name=name, _orig=original):
            if self.family == socket.AF_UNIX:  # local IPC (e.g. multiprocessing), not the network
                return _orig(self, address)
            attempts.append(f"socket.{_name}({address!r})")
            raise OSError(f"network disabled in test: connect {address!r}")

        monkeypatch.setattr(socket.socket, name, method)
    return attempts


def test_in_process_train_val_predict_export_try_no_network(shapes_data, tmp_path, monkeypatch):
    attempts = _guard(monkeypatch)
    common = ["imgsz=64", "workers=0", "plots=False", f"project={tmp_path}", "exist_ok=True"]
    assert entrypoint(["train", "model=yolov5n-c3tr.yaml", f"data={shapes_data}", "epochs=1", "batch=8", "name=t",
                       *common]) == 0
    best = tmp_path / "t" / "weights" / "best.pt"
    image = next((shapes_data.parent / "images" / "val").glob("*.jpg"))
    assert entrypoint(["val", f"model={best}", "name=v", *common]) == 0
    assert entrypoint(["predict", f"model={best}", f"source={image}", "name=p", *common]) == 0
    assert entrypoint(["export", f"model={best}", "format=onnx", "imgsz=64"]) == 0
    assert entrypoint(["val", "model=yolov5n-c3tr.yaml", "data=coco8.yaml"]) == 2  # would download: refused early
    assert attempts == []


_CHILD = r"""
import json, socket, sys
attempts = []
def refuse(name):
    def f(*args, **kwargs):
        attempts.append(name + repr(args[:2]))
        raise OSError("network disabled in test")
    return f
for name in %(names)r:
    setattr(socket, name, refuse(name))
for name in ("connect", "connect_ex"):
    orig = getattr(socket.socket, name)
    def method(self, address, _name=name, _orig=orig):
        if self.family == socket.AF_UNIX:
            return _orig(self, address)
        attempts.append("socket." + _name + repr(address))
        raise OSError("network disabled in test")
    setattr(socket.socket, name, method)

sys.argv = ["yolo-attn"]  # as the console script: the command must make itself offline
from yolo_attn.cli import entrypoint
"""


def test_command_is_offline_without_yolo_offline_env(shapes_data, tmp_path):
    """As a user runs it: no YOLO_OFFLINE, no fonts in the ultralytics config dir, guard in place before any import."""
    common = ["imgsz=64", "workers=0", "plots=False", f"project={tmp_path}", "exist_ok=True"]
    best = tmp_path / "t" / "weights" / "best.pt"
    image = next((shapes_data.parent / "images" / "val").glob("*.jpg"))
    runs = [
        ["train", "model=yolov5n-c3tr.yaml", f"data={shapes_data}", "epochs=1", "batch=8", "name=t", *common],
        ["val", f"model={best}", "name=v", *common],
        ["predict", f"model={best}", f"source={image}", "name=p", *common],
        ["export", f"model={best}", "format=onnx", "imgsz=64"],
    ]
    code = _CHILD % {"names": _NAMES} + (
        f"rcs = [entrypoint(a) for a in {runs!r}]\n"
        "import os\n"
        "print('RESULT', json.dumps({'rcs': rcs, 'attempts': attempts, 'offline': os.environ.get('YOLO_OFFLINE')}))\n"
    )
    env = subprocess_env(YOLO_CONFIG_DIR=str(tmp_path / "fresh_cfg"))
    env.pop("YOLO_OFFLINE", None)
    env.pop("YOLO_AUTOINSTALL", None)
    r = subprocess.run([PYTHON, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.split("RESULT ", 1)[1])
    assert result == {"rcs": [0, 0, 0, 0], "attempts": [], "offline": "1"}, r.stderr[-3000:]
    assert (tmp_path / "fresh_cfg" / "Ultralytics" / "Arial.ttf").is_file()  # placed locally, not downloaded
