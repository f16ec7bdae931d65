"""Every docstring example runs as written, from the repository root (as the README's commands do)."""

import doctest

import pytest
from conftest import REPO, needs_shared

import data
import errors
import model
import sts
import training


@needs_shared
@pytest.mark.parametrize("module", [data, errors, model, sts, training])
def test_docstring_examples_run(monkeypatch, module):
    monkeypatch.chdir(REPO)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0 or module is errors
