"""deeprc-core imports with only its declared dependencies (runs in both environments)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent

pytestmark = pytest.mark.compat


def test_core_imports_without_frameworks_or_launcher() -> None:
    forbidden = (
        "torch,tensorflow,keras,lightning,pytorch_lightning,radical,deeprc_torch,deeprc_tf,deeprc_launch,pycylon"
    )
    proc = subprocess.run(
        [sys.executable, str(HERE / "blocked_imports.py"), "deeprc_core", forbidden], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_core_declares_only_pyarrow_and_numpy() -> None:
    from importlib.metadata import requires

    reqs = [r for r in (requires("deeprc-core") or []) if "extra ==" not in r]
    names = sorted(r.split(">")[0].split("=")[0].split("<")[0].strip() for r in reqs)
    assert names == ["numpy", "pyarrow"]
