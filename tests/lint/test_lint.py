"""The code stays ruff- and mypy-clean: checked in the suite so CI enforces it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_clean() -> None:
    check = run("ruff", "check", ".")
    assert check.returncode == 0, check.stdout
    fmt = run("ruff", "format", "--check", ".")
    assert fmt.returncode == 0, fmt.stdout


def test_mypy_clean() -> None:
    result = run("mypy", "worker", "trainer")
    assert result.returncode == 0, result.stdout
