"""A manual detector training loop: the model's own loss on a fixed batch, SGD, optional AMP (autocast + GradScaler).

Used where ultralytics' trainer is too heavy: training throughput in ``yolo-attn bench gpu part=train`` (steady
state of forward + loss + backward + optimizer step, no data loading), and tests that need a briefly trained
checkpoint. The loss is ultralytics' detection loss (``DetectionModel.loss``) with its default hyperparameters
(``box``, ``cls``, ``dfl`` gains), exactly what the trainer optimises; there is no warm-up schedule, EMA, data
augmentation or gradient accumulation.

Batches are dicts in ultralytics' layout: ``img [B, 3, H, W]`` in ``[0, 1]``, ``batch_idx [n]``, ``cls [n, 1]``,
``bboxes [n, 4]`` (normalised ``cx, cy, w, h``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["with_loss_hyperparameters", "synthetic_batch", "dataset_batch", "TrainLoop"]


def with_loss_hyperparameters(model: nn.Module) -> nn.Module:
    """Give a ``DetectionModel`` ultralytics' default loss hyperparameters (what the trainer attaches), in place.

    Args:
        model: An ultralytics ``DetectionModel``.

    Returns:
        ``model``.
    """
    from ultralytics.cfg import get_cfg

    if not hasattr(getattr(model, "args", None), "box"):
        model.args = get_cfg()
    return model


def synthetic_batch(
    batch_size: int, imgsz: int, nc: int = 80, boxes_per_image: int = 4, device: str | torch.device = "cpu",
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A random batch: uniform noise images and ``boxes_per_image`` random boxes (random classes) per image.

    Args:
        batch_size: Images.
        imgsz: Square image side.
        nc: Number of classes of the model.
        boxes_per_image: Labelled boxes per image.
        device: Device of the tensors.
        seed: Seed of the generator.

    Returns:
        A batch dict (see the module docstring).

    Examples:
        >>> b = synthetic_batch(2, 64, nc=5)
        >>> b["img"].shape, b["bboxes"].shape
        (torch.Size([2, 3, 64, 64]), torch.Size([8, 4]))
    """
    gen = torch.Generator().manual_seed(seed)
    n = batch_size * boxes_per_image
    wh = torch.rand(n, 2, generator=gen) * 0.4 + 0.05
    centre = wh / 2 + torch.rand(n, 2, generator=gen) * (1 - wh)
    batch = {
        "img": torch.rand(batch_size, 3, imgsz, imgsz, generator=gen),
        "batch_idx": torch.arange(batch_size).repeat_interleave(boxes_per_image).float(),
        "cls": torch.randint(0, nc, (n, 1), generator=gen).float(),
        "bboxes": torch.cat([centre, wh], 1),
    }
    return {k: v.to(device) for k, v in batch.items()}


def dataset_batch(data_yaml: str | Path, split: str = "train", imgsz: int = 64, limit: int | None = None) -> dict:
    """Read images and YOLO txt labels of a dataset split into one batch (images resized to ``imgsz``, RGB).

    Args:
        data_yaml: A data YAML with ``path`` and the split's image folder (e.g. from
            :func:`yolo_attn.data.make_shapes_dataset`).
        split: ``"train"`` or ``"val"``.
        imgsz: Square side the images are resized to (labels are normalised, so they stay valid).
        limit: Read at most this many images (sorted by name).

    Returns:
        A batch dict (see the module docstring).
    """
    import cv2
    import yaml
    from ultralytics.data.utils import img2label_paths

    meta = yaml.safe_load(Path(data_yaml).read_text())
    root = Path(meta.get("path") or Path(data_yaml).parent)
    images = sorted((root / meta[split]).glob("*.jpg"))[:limit]
    if not images:
        raise ValueError(f"no .jpg images in {root / meta[split]} (split={split!r} of {data_yaml})")
    imgs, idx, cls, boxes = [], [], [], []
    for i, (f, label) in enumerate(zip(images, map(Path, img2label_paths([str(f) for f in images])))):
        img = cv2.resize(cv2.imread(str(f))[:, :, ::-1], (imgsz, imgsz), interpolation=cv2.INTER_AREA)
        imgs.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255)
        rows = np.loadtxt(label, ndmin=2) if label.is_file() and label.stat().st_size else np.zeros((0, 5))
        idx += [i] * len(rows)
        cls += rows[:, :1].tolist()
        boxes += rows[:, 1:].tolist()
    return {"img": torch.stack(imgs), "batch_idx": torch.tensor(idx, dtype=torch.float32),
            "cls": torch.tensor(cls, dtype=torch.float32).reshape(-1, 1),
            "bboxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)}


class TrainLoop:
    """SGD (Nesterov momentum) on a detector's own loss, optionally with AMP (autocast; GradScaler for float16).

    Args:
        model: An ultralytics ``DetectionModel`` (moved to ``device``, put in train mode, loss hyperparameters
            attached by :func:`with_loss_hyperparameters`).
        device: Device to train on.
        amp: Autocast dtype (``torch.float16`` / ``torch.bfloat16``) or None for full precision. float16 uses a
            ``GradScaler`` (as ultralytics' trainer does).
        lr: Learning rate.
        momentum: SGD momentum.

    Examples:
        >>> from yolo_attn.bench.models import build_model
        >>> loop = TrainLoop(build_model("yolov5n.yaml"))
        >>> len(loop.run(synthetic_batch(2, 64), steps=1))
        1
    """

    def __init__(
        self, model: nn.Module, device: str | torch.device = "cpu", amp: torch.dtype | None = None, lr: float = 0.01,
        momentum: float = 0.9,
    ) -> None:
        self.device = torch.device(device)
        self.model = with_loss_hyperparameters(model).to(self.device).train()
        self.model.criterion = None  # built on the model's device at the first step
        self.amp = amp
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=momentum, nesterov=True)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == torch.float16)

    def _autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One optimizer step on ``batch`` (tensors on the loop's device); returns the detached loss."""
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss, _ = self.model.loss(batch)
        loss = loss.sum()
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=10.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

    def run(self, batch: dict[str, torch.Tensor], steps: int) -> list[float]:
        """``steps`` optimizer steps on the same batch (moved to the device once); returns the losses."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        return [float(self.step(batch)) for _ in range(steps)]
