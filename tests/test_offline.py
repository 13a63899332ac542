"""Offline-clean: train, val, predict and export make no network attempt at all (no connection, no name lookup, no
UDP datagram), in this process or in any process they start.

The guard (``tests/netguard.py``) replaces every socket entry point that can reach the network with a recorder that
refuses. It runs in-process with the test environment (YOLO_OFFLINE=1) and, through a generated ``sitecustomize``,
in every Python child process; a fresh process also runs the command as a user would: no YOLO_OFFLINE in the
environment, a fresh ultralytics config dir (no fonts yet), guard installed before anything is imported. Positive
controls show that the guard records what it claims to catch, in-process, in a child and in a grandchild.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PYTHON, subprocess_env
from netguard import NetGuard, guarded_env, read_log
from yolo_attn.cli import entrypoint

PROBES = r"""
import socket
def probe(call):
    try:
        call()
    except OSError:
        pass
    else:
        raise SystemExit("not refused: " + repr(call))
probe(lambda: socket.getaddrinfo("example.com", 443))
probe(lambda: socket.gethostbyname("example.com"))
probe(lambda: socket.create_connection(("192.0.2.1", 80), timeout=1))
tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
probe(lambda: tcp.connect(("192.0.2.1", 80)))
probe(lambda: tcp.connect_ex(("192.0.2.1", 80)))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
probe(lambda: udp.sendto(b"x", ("192.0.2.1", 53)))
probe(lambda: udp.sendto(b"x", 0, ("192.0.2.1", 53)))
probe(lambda: udp.sendmsg([b"x"], [], 0, ("192.0.2.1", 53)))
probe(lambda: udp.connect(("192.0.2.1", 53)))
a, b = socket.socketpair()  # local IPC stays allowed
a.sendall(b"ok")
assert b.recv(2) == b"ok"
"""
EXPECTED = ["getaddrinfo", "gethostbyname", "create_connection", "socket.connect(", "socket.connect_ex(",
            "socket.sendto(", "socket.sendto(", "socket.sendmsg(", "socket.connect("]


def _kinds(attempts: list[str]) -> list[str]:
    return [next(e for e in EXPECTED if a.startswith(e)) for a in attempts]


def test_guard_records_every_kind_of_attempt():
    """Positive control, in-process: each probe is refused and recorded; the guard comes off cleanly."""
    original = socket.getaddrinfo
    with NetGuard() as guard:
        exec(PROBES, {})
    assert _kinds(guard.attempts) == EXPECTED, guard.attempts
    assert "('192.0.2.1', 53)" in guard.attempts[5]
    assert socket.getaddrinfo is original


def test_guard_reaches_child_and_grandchild_processes(tmp_path):
    """Positive control across processes: a child and the child's child run guarded and log their attempts."""
    log = tmp_path / "net.log"
    grandchild = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {PROBES!r}], check=True)"
    env = guarded_env(subprocess_env(), tmp_path / "guard", log)
    r = subprocess.run([PYTHON, "-c", PROBES + "\n" + grandchild], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    attempts, launched = read_log(log)
    pids = sorted({a["pid"] for a in attempts})
    assert len(pids) == 2, attempts  # the child and the grandchild
    for pid in pids:
        assert _kinds([a["attempt"] for a in attempts if a["pid"] == pid]) == EXPECTED
    assert [x["launched"][0] for x in launched] == [sys.executable]


#: Non-Python programs the code under test may start: they read local files only (``ldconfig -p``: ctypes'
#: ``find_library``). Anything else must be looked at and added here, or it runs unguarded.
LOCAL_PROGRAMS = {"ldconfig", "ldconfig.real"}


@pytest.mark.parametrize("program, expected", [("yolo-attn", []), ("python", ["getaddrinfo"])],
                         ids=["command", "library-control"])
def test_command_is_offline_from_its_first_import(program, expected, tmp_path):
    """The console script is offline before ultralytics' import-time probe; a plain library import (the control)
    does probe, so the guard would see a command that forgot to go offline."""
    log = tmp_path / "net.log"
    env = guarded_env(subprocess_env(YOLO_CONFIG_DIR=str(tmp_path / "cfg")), tmp_path / "guard", log)
    env.pop("YOLO_OFFLINE", None)
    module = "yolo_attn.cli" if program == "yolo-attn" else "yolo_attn"
    code = f"import sys; sys.argv = [{program!r}]; import {module}"
    r = subprocess.run([PYTHON, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted({a["attempt"].split("(")[0] for a in read_log(log)[0]}) == expected


def _assert_only_guarded_children(launched) -> None:
    """Every program launched was a Python interpreter (so it ran under the guard) or a known local tool."""
    programs = [Path(x["launched"][0] if isinstance(x, dict) else x[0]).name for x in launched]
    assert all(p.startswith("python") or p in LOCAL_PROGRAMS for p in programs), programs


@pytest.mark.slow
def test_in_process_train_val_predict_export_try_no_network(shapes_data, tmp_path, monkeypatch):
    log = tmp_path / "net.log"
    for key, value in guarded_env(dict(os.environ), tmp_path / "guard", log).items():
        monkeypatch.setenv(key, value)  # child processes started by the code under test run guarded too
    common = ["imgsz=64", "workers=0", "plots=False", f"project={tmp_path}", "exist_ok=True"]
    best = tmp_path / "t" / "weights" / "best.pt"
    image = next((shapes_data.parent / "images" / "val").glob("*.jpg"))
    with NetGuard(log) as guard:
        assert entrypoint(["train", "model=yolov5n-c3tr.yaml", f"data={shapes_data}", "epochs=1", "batch=8",
                           "name=t", *common]) == 0
        assert entrypoint(["val", f"model={best}", "name=v", *common]) == 0
        assert entrypoint(["predict", f"model={best}", f"source={image}", "name=p", *common]) == 0
        assert entrypoint(["export", f"model={best}", "format=onnx", "imgsz=64"]) == 0
        assert entrypoint(["val", "model=yolov5n-c3tr.yaml", "data=coco8.yaml"]) == 2  # would download: refused early
    assert guard.attempts == []
    assert read_log(log)[0] == []  # nor in any child process
    _assert_only_guarded_children(guard.launched)


@pytest.mark.slow
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
    code = (
        "import json, os, sys\n"
        "assert 'netguard' in sys.modules and 'yolo_attn' not in sys.modules  # guarded before any import\n"
        "sys.argv = ['yolo-attn']  # as the console script: the command must make itself offline\n"
        "from yolo_attn.cli import entrypoint\n"
        f"rcs = [entrypoint(a) for a in {runs!r}]\n"
        "print('RESULT', json.dumps({'rcs': rcs, 'offline': os.environ.get('YOLO_OFFLINE')}))\n"
    )
    log = tmp_path / "net.log"
    env = guarded_env(subprocess_env(YOLO_CONFIG_DIR=str(tmp_path / "fresh_cfg")), tmp_path / "guard", log)
    env.pop("YOLO_OFFLINE", None)
    env.pop("YOLO_AUTOINSTALL", None)
    r = subprocess.run([PYTHON, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.split("RESULT ", 1)[1])
    assert result == {"rcs": [0, 0, 0, 0], "offline": "1"}, r.stderr[-3000:]
    attempts, launched = read_log(log)
    assert attempts == [], attempts
    _assert_only_guarded_children(launched)
    assert (tmp_path / "fresh_cfg" / "Ultralytics" / "Arial.ttf").is_file()  # placed locally, not downloaded
