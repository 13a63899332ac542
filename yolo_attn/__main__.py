"""``python -m yolo_attn ...`` is the ``yolo-attn`` command."""

from .cli import main

main()
