"""Shared pytest configuration: data location, and skipping framework tests where absent.

Tests marked ``torch``, ``tensorflow`` or ``launcher`` are skipped (with the reason)
when that framework is not importable, so the core's suite also runs in the
pyarrow-10 compatibility environment, which holds deeprc-core alone.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.shipped_data import data_root

REPO = Path(__file__).resolve().parents[1]

_NEEDS = {"torch": "lightning", "tensorflow": "tensorflow", "launcher": "radical.pilot"}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--publish``: suites that measure (tests/faults) also update their tracked results files."""
    parser.addoption(
        "--publish",
        action="store_true",
        help="also write measured figures into the tracked results files the docs quote (tests/faults/results/)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for marker, module in _NEEDS.items():
            if item.get_closest_marker(marker) and not _importable(module):
                item.add_marker(pytest.mark.skip(reason=f"{module} is not installed in this environment"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Folder of the datasets (ETT, CAMELS-US): ``$DEEPRC_DATA``, else the repo's data/ (never skipped)."""
    return data_root()


# Shared by tests/launch and tests/faults: one isolated DEEPRC_HOME and one pilot service per session.
@pytest.fixture(scope="session")
def deeprc_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private DEEPRC_HOME (configs, run logs, service socket) for the whole test session."""
    home = tmp_path_factory.mktemp("dh")
    os.environ["DEEPRC_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def pilot_service(deeprc_home: Path) -> Iterator[Path]:
    """One `deeprc-launch up` pilot service for every CLI test that needs a pilot; `down` at the end."""
    from tests.launch.conftest import run_cli

    up = run_cli(["up", "--walltime", "30"], timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield deeprc_home
    finally:
        down = run_cli(["down"], timeout=300)
        assert down.returncode == 0, down.stdout + down.stderr
