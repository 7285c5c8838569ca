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


def test_wiring_and_the_launch_bootstrap_import_no_pyarrow() -> None:
    """``deeprc_core`` exports lazily (PEP 562): the in-task bootstrap pays for no pyarrow import."""
    probe = (
        "import sys, deeprc_core, deeprc_core.wiring, deeprc_core.env_vars\n"
        "deeprc_core.detect_wiring\n"
        "try:\n"
        "    import deeprc_launch.bootstrap\n"
        "except ImportError:\n"
        "    pass\n"
        "assert 'pyarrow' not in sys.modules, sorted(m for m in sys.modules if m.startswith('pyarrow'))[:3]\n"
        "deeprc_core.GlobalTable  # first use loads the table module (and pyarrow)\n"
        "assert 'pyarrow' in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
