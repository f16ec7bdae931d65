"""The code is ruff-clean and ruff-formatted (config in pyproject.toml), and its library modules small."""

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


# Each library module holds one concern (its opening docstring says which); past this it holds more than one.
MAX_MODULE_LINES = 450
SCRIPTS = {"train_unsupervised.py", "train_supervised.py", "evaluate.py", "export.py", "search.py", "report.py"}


def test_library_modules_stay_small():
    sizes = {path.name: len(path.read_text().splitlines()) for path in REPO.glob("*.py") if path.name not in SCRIPTS}
    assert len(sizes) > 10 and not {name: lines for name, lines in sizes.items() if lines > MAX_MODULE_LINES}
