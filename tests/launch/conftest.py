"""Helpers of the deeprc-launch tests (the DEEPRC_HOME and pilot-service fixtures are in tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
CLI = [sys.executable, "-m", "deeprc_launch"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "launcher: needs a real RADICAL-Pilot pilot on this machine")
    config.addinivalue_line("markers", "slow: takes tens of seconds or more")


def run_cli(
    args: list[str], timeout: float = 300, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    """Run ``deeprc-launch args`` in ``cwd`` and capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=full_env)
