"""An uncaught exception under mpirun is printed before MPI_Abort ends the job.

torch.distributed installs its own excepthook around the previous one and captures what
that writes to ``sys.stderr`` to print it afterwards; an abort inside the captured hook
used to swallow the traceback on every rank. Reproduced here without torch.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.ranks import MPIRUN_ROOT_ENV, REPO, mpirun_available, mpirun_command

pytestmark = [pytest.mark.mpi, pytest.mark.compat]

SCRIPT = textwrap.dedent(
    """
    import io, sys, contextlib
    import deeprc_core

    comm = deeprc_core.get_communicator()  # MPI: installs the abort hook
    inner = sys.excepthook

    def capturing_hook(kind, value, tb):  # what torch.distributed's hook does
        buf = io.StringIO()
        with contextlib.redirect_stderr(buf):
            inner(kind, value, tb)
        sys.stderr.write(buf.getvalue())

    sys.excepthook = capturing_hook
    comm.barrier()
    raise ValueError(f"boom on rank {comm.rank}")
    """
)


def test_traceback_survives_mpi_abort(tmp_path: Path) -> None:
    if not mpirun_available():
        pytest.skip("mpirun not installed")
    script = tmp_path / "raise_everywhere.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, **MPIRUN_ROOT_ENV, DEEPRC_COMM="mpi")
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        mpirun_command(2, [sys.executable, str(script)], export=["DEEPRC_COMM"]),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "uncaught exception, aborting the MPI job" in out
    assert "ValueError: boom on rank" in out
