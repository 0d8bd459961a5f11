"""The architecture holds: import-linter contracts (layers, pure core/forecasting/api) and mypy
strict on the pure packages. Both tools run as subprocesses exactly as a developer runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    # cwd is the repository root (pyproject.toml is read from there); never operator/, whose
    # name would shadow the standard library's `operator` module.
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_import_contracts_are_kept() -> None:
    result = run(str(BIN / "lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" in result.stdout and " 0 broken" in result.stdout


def test_package_type_checks_strict_on_pure_packages() -> None:
    # pyproject's [tool.mypy] checks all of gpufleet, strict on core, api and forecasting.
    result = run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr
