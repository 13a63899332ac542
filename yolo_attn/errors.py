"""The one user-facing error of the workflows: a bad argument, reported in one line without a traceback."""

from __future__ import annotations

__all__ = ["WorkflowError"]


class WorkflowError(ValueError):
    """A user-facing problem with the arguments (missing file, would-download, unknown device); one-line message."""
