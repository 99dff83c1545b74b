"""The linter's settings (pyproject.toml: pyflakes, pycodestyle errors, import order, 120 columns)
hold for every Python file of the repository."""

import subprocess
import sys

from tests import helpers


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format=concise", "."],
                            cwd=helpers.ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
