"""`import gradclip` loads its public names on first use: every name of `__all__` is there,
the same object as in its defining module, and the package import itself leaves torch alone."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import gradclip

INIT = Path(gradclip.__file__)


@pytest.mark.parametrize("name", gradclip.__all__)
def test_every_public_name_is_the_object_its_module_defines(name):
    module = importlib.import_module(gradclip._SOURCES[name])
    assert getattr(gradclip, name) is getattr(module, name)
    namespace: dict[str, object] = {}
    exec(f"from gradclip import {name} as found", namespace)
    assert namespace["found"] is getattr(module, name)


def test_the_lazy_table_and_the_type_checking_imports_name_the_same_sources():
    # the TYPE_CHECKING block is what type checkers and the API reference read
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    guarded = next(node for node in tree.body if isinstance(node, ast.If))
    imported = {alias.name: node.module for node in guarded.body
                if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert imported == gradclip._SOURCES
    assert sorted(imported) == sorted(gradclip.__all__)


def test_submodules_are_reachable_as_attributes_and_unknown_names_are_attribute_errors():
    assert gradclip.strategies.NormClip is gradclip.NormClip
    with pytest.raises(AttributeError, match="no_such_name"):
        gradclip.no_such_name  # noqa: B018
    assert set(gradclip.__all__) <= set(dir(gradclip))


def test_importing_the_package_does_not_import_torch():
    probe = "import sys, gradclip; print(gradclip.__version__, 'torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [gradclip.__version__, "False"]
