"""Briefly trained detectors for tests that need outputs which really depend on the input (precision, export parity).

A randomly initialised detector predicts almost the same boxes and scores for any image (uniform box
distributions, scores near the prior), so comparisons on it hide errors. :func:`trained_model` trains a config for a
few optimizer steps on tiny generated shapes data with yolo_attn's manual loop (ultralytics' detection loss, AdamW;
:class:`yolo_attn.bench.training.TrainLoop`), then re-estimates the BatchNorm statistics on training images at the
evaluation size (a few steps leave the running averages near their initial values). Cost: about 1.5 CPU-seconds
per config. Models are cached per (config, data, sizes) for the session; callers get a deep copy.

Use::

    from trained import input_dependence, trained_model

    model = trained_model("yolov5n-local.yaml", shapes_data)   # fp32, eval mode
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import torch

#: Training recipe (fixed: every config gets the same).
TRAIN_IMGSZ, TRAIN_IMAGES, STEPS, LR = 64, 4, 6, 1e-3
#: Evaluation size: P3/P4/P5 maps of 16x16 / 8x8 / 4x4, so 7x7 local windows are really sparse at P3.
EVAL_IMGSZ = 128
NUM_CLASSES = 5


@functools.lru_cache(maxsize=None)
def _batch(data_yaml: str, split: str, imgsz: int, limit: int) -> dict:
    from yolo_attn.bench.training import dataset_batch

    return dataset_batch(data_yaml, split, imgsz, limit)


def eval_images(data_yaml: str | Path, n: int = 2) -> torch.Tensor:
    """``n`` validation images ``[n, 3, EVAL_IMGSZ, EVAL_IMGSZ]`` in ``[0, 1]``."""
    return _batch(str(data_yaml), "val", EVAL_IMGSZ, n)["img"].clone()


def _recalibrate_batchnorm(model: torch.nn.Module, images: torch.Tensor) -> None:
    """Exact BatchNorm statistics of ``images`` (cumulative average over one pass), then eval mode."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        model(images)
    for bn in bns:
        bn.momentum = 0.03  # ultralytics' value
    model.eval()


@functools.lru_cache(maxsize=None)
def _trained(cfg: str, data_yaml: str) -> torch.nn.Module:
    from ultralytics.nn.tasks import DetectionModel

    from yolo_attn.bench.training import TrainLoop
    from yolo_attn.integration import resolve_config

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = DetectionModel(str(resolve_config(cfg)), nc=NUM_CLASSES, verbose=False)
            loop = TrainLoop(model, lr=LR)
            loop.optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
            loop.run(_batch(data_yaml, "train", TRAIN_IMGSZ, TRAIN_IMAGES), STEPS)
            model.criterion = None
            _recalibrate_batchnorm(model, _batch(data_yaml, "train", EVAL_IMGSZ, TRAIN_IMAGES)["img"])
    finally:
        torch.set_num_threads(before)
    return model


def trained_model(cfg: str, data_yaml: str | Path) -> torch.nn.Module:
    """A copy of ``cfg`` (e.g. ``"yolov5n-local.yaml"``) trained briefly on ``data_yaml``; fp32, eval mode, CPU.

    Args:
        cfg: Config name (resolved like ``yolo-attn`` does) or path.
        data_yaml: A small YOLO-layout dataset, e.g. the ``shapes_data`` fixture.

    Returns:
        A fresh deep copy (callers may convert it, e.g. ``.half()``).
    """
    return copy.deepcopy(_trained(str(cfg), str(data_yaml)))


@torch.no_grad()
def input_dependence(model: torch.nn.Module, images: torch.Tensor) -> dict[str, float]:
    """How much the decoded outputs change between real images and all-zero images of the same size.

    Returns:
        ``{"boxes": mean |dbox| / max |box|, "scores": max |dscore|}``.
    """
    real, zero = model(images)[0], model(torch.zeros_like(images))[0]
    return {"boxes": float((real[:, :4] - zero[:, :4]).abs().mean() / real[:, :4].abs().max()),
            "scores": float((real[:, 4:] - zero[:, 4:]).abs().max())}
