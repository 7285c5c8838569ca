"""Fixtures for deeprc-launch tests: an isolated DEEPRC_HOME and one pilot service shared by the CLI tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
CLI = [sys.executable, "-m", "deeprc_launch"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "launcher: needs a real RADICAL-Pilot pilot on this machine")
    config.addinivalue_line("markers", "slow: takes tens of seconds or more")


@pytest.fixture(scope="session")
def deeprc_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private DEEPRC_HOME (configs, run logs, service socket) for the whole test session."""
    home = tmp_path_factory.mktemp("dh")
    os.environ["DEEPRC_HOME"] = str(home)
    return home


def run_cli(
    args: list[str], timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``deeprc-launch args`` and capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=full_env)


@pytest.fixture(scope="session")
def pilot_service(deeprc_home: Path) -> Iterator[Path]:
    """One `deeprc-launch up` pilot service for every CLI test that needs a pilot; `down` at the end."""
    up = run_cli(["up", "--walltime", "30"], timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield deeprc_home
    finally:
        down = run_cli(["down"], timeout=300)
        assert down.returncode == 0, down.stdout + down.stderr
