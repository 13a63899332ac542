"""The examples in the docstrings (``>>>``) run and print what they show, in every module of the package."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import yolo_attn

MODULES = sorted(m.name for m in pkgutil.walk_packages(yolo_attn.__path__, "yolo_attn.")
                 if not m.name.endswith("__main__"))


def test_the_package_has_examples_to_run():
    finder = doctest.DocTestFinder()
    examples = sum(len(t.examples) for name in MODULES for t in finder.find(importlib.import_module(name)))
    assert len(MODULES) > 40 and examples > 150


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that save a file (``show``'s pictures) write here, not into the checkout
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, report=True)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (printed above)"
