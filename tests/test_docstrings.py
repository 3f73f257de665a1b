"""The examples in the public functions' docstrings run and print what they say."""
from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["segkit.ops.mode_filter", "segkit.ops.confusion", "segkit.ops.convcrf",
           "segkit.ops.soft_vote", "segkit._backend", "segkit.ops.vote_confusion"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0
