"""The configs shipped in ``yolo_attn/cfg`` and their names: family, scale letter, the stock model of each family.

A config file is named ``<family>-<variant>.yaml`` (``yolov5-local.yaml``, ``yolov8-local.yaml``,
``yolo11-local.yaml``; plain ``yolov5.yaml``) and built at a scale by putting the scale letter after the family, as
ultralytics does (``yolov5n-local.yaml``, ``yolo11s-local.yaml``). Each family's configs keep the layer indices of
ultralytics' own config of that family (:data:`FAMILIES`), so the family's stock checkpoint transfers into them.

Examples:
    >>> scaled("yolo11-local.yaml", "s"), family("yolov5n-local.yaml")
    ('yolo11s-local.yaml', 'yolov5')
    >>> stock_weights("yolov5s-local.yaml"), stock_weights("yolo11n-local.yaml")
    ('yolov5su.pt', 'yolo11n.pt')
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["CONFIG_DIR", "FAMILIES", "family", "scale_of", "scaled", "shipped", "stock_config", "stock_weights"]

CONFIG_DIR = Path(__file__).parent / "cfg"

#: family -> (ultralytics' own config, its stock checkpoint); ``{s}`` is the scale letter.
FAMILIES = {
    "yolov5": ("yolov5{s}.yaml", "yolov5{s}u.pt"),
    "yolov8": ("yolov8{s}.yaml", "yolov8{s}.pt"),
    "yolo11": ("yolo11{s}.yaml", "yolo11{s}.pt"),
}
_NAME = re.compile(r"^(yolov\d+|yolo\d+)([nslmx]?)((?:-.+)?)$")


def _parts(name: str | Path) -> tuple[str, str, str]:
    """``(family, scale letter or "", "-variant" or "")`` of a config name or path."""
    stem = Path(str(name)).stem
    m = _NAME.match(stem)
    if not m:
        raise ValueError(f"config name {Path(str(name)).name!r} is not <family>[scale]-<variant>.yaml, e.g. "
                         "yolov5n-local.yaml or yolo11s-local.yaml")
    return m.group(1), m.group(2), m.group(3)


def unscaled(path: str | Path) -> Path:
    """``path`` with the scale letter dropped from its file name only, the file ultralytics reads for a scaled name.

    Examples:
        >>> unscaled("run45m/yolov5n-local.yaml").as_posix()
        'run45m/yolov5-local.yaml'
    """
    p = Path(str(path))
    return p.with_name(re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", p.stem) + p.suffix)


def family(name: str | Path) -> str:
    """The family of a config name: ``yolov5``, ``yolov8``, ``yolo11`` (or another ultralytics family, e.g. ``yolo12``)."""
    return _parts(name)[0]


def scale_of(name: str | Path) -> str:
    """The scale letter in a config name (``""`` when it has none, e.g. ``yolov5-local.yaml``)."""
    return _parts(name)[1]


def scaled(name: str | Path, scale: str) -> str:
    """The file name of ``name`` at ``scale``: ``scaled("yolov5-local.yaml", "n") == "yolov5n-local.yaml"``.

    Args:
        name: A config name or path, with or without a scale letter.
        scale: One of ``n, s, m, l, x``.

    Returns:
        The file name (no folder).
    """
    fam, _, variant = _parts(name)
    return f"{fam}{scale}{variant}{Path(str(name)).suffix or '.yaml'}"


def shipped(scale: str | None = None) -> list[str]:
    """The configs in ``yolo_attn/cfg``, grouped by family (YOLOv5, YOLOv8, YOLO11), plain ``yolov5.yaml`` first.

    Args:
        scale: Return the names at this scale (``yolov5n-local.yaml``); None: as shipped (``yolov5-local.yaml``).

    Returns:
        File names.
    """
    order = list(FAMILIES)
    names = sorted((p.name for p in CONFIG_DIR.glob("*.yaml")),
                   key=lambda n: (order.index(family(n)) if family(n) in order else len(order), n != "yolov5.yaml", n))
    return [scaled(n, scale) for n in names] if scale else names


def stock_config(name: str | Path, scale: str | None = None) -> str:
    """ultralytics' own config of the family of ``name`` at its scale: ``yolo11-local.yaml``, ``"s"`` -> ``yolo11s.yaml``.

    Args:
        name: A config name of a family in :data:`FAMILIES`.
        scale: Scale letter (default: the one in ``name``, else ``n``).

    Returns:
        A config name ultralytics resolves itself.
    """
    return FAMILIES[_known(name)][0].format(s=scale or scale_of(name) or "n")


def stock_weights(name: str | Path, scale: str | None = None) -> str:
    """File name of the stock checkpoint of the family of ``name``: ``yolov5su.pt``, ``yolov8s.pt``, ``yolo11s.pt``.

    Args:
        name: A config name of a family in :data:`FAMILIES`.
        scale: Scale letter (default: the one in ``name``, else ``n``).

    Returns:
        The checkpoint's file name (as ultralytics publishes it).
    """
    return FAMILIES[_known(name)][1].format(s=scale or scale_of(name) or "n")


def _known(name: str | Path) -> str:
    fam = family(name)
    if fam not in FAMILIES:
        raise ValueError(f"{Path(str(name)).name}: family {fam!r} has no yolo_attn configs; known: {', '.join(FAMILIES)}")
    return fam
