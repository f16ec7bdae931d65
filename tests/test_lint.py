"""The code is ruff-clean and ruff-formatted (config in pyproject.toml)."""

import pathlib
import shutil
import subprocess
import sys

import pytest
from helpers import REPO

# The ruff of this interpreter's environment first: the one requirements.txt pins.
RUFF = shutil.which("ruff", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("ruff")


@pytest.mark.skipif(RUFF is None, reason="ruff is not installed (pip install -r requirements.txt)")
@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]])
def test_ruff(command):
    result = subprocess.run([RUFF, *command], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
