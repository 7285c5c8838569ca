"""Shared fixtures of the core tests: data paths, a simulated communicator, launchers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from deeprc_core.comm.base import BaseCommunicator

from examples.shipped_data import data_path
from tests.support.ranks import mpirun_available

HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    # The root pyproject registers these too; registering twice is harmless.
    config.addinivalue_line("markers", "mpi: runs several real processes (mpirun or torchrun-style)")


@pytest.fixture(scope="session")
def etth1() -> Path:
    """ETTh1.csv: from ``$DEEPRC_DATA``, else the repo's data/ (never skipped)."""
    return data_path("ett", "ETTh1.csv")


def launcher_params(spec: Sequence[tuple[str, int]]) -> list[Any]:
    """pytest params for (launcher, ranks), skipping mpirun where Open MPI is missing."""
    out = []
    for launcher, n in spec:
        marks = [pytest.mark.mpi]
        if launcher == "mpirun" and not mpirun_available():
            marks.append(pytest.mark.skip(reason="mpirun is not on PATH"))
        out.append(pytest.param(launcher, n, id=f"{launcher}-{n}", marks=marks))
    return out


def launch_env(launcher: str, **extra: str) -> dict[str, str]:
    """Environment for run_ranks: the env launcher talks over the TCP communicator."""
    env = {"DEEPRC_COMM": "tcp"} if launcher == "env" else {}
    env.update(extra)
    return env


class EchoComm(BaseCommunicator):
    """Rank ``rank`` of ``size`` in one process: every other rank 'sends' what this one sends.

    Good for logic that only needs the collectives to return consistent values (readers'
    byte ranges, plans from given counts), so P ranks can be simulated in-process.
    ``counts`` makes ``allgather`` of an int return those per-rank values instead.
    """

    kind = "echo"

    def __init__(self, rank: int, size: int, counts: Sequence[int] | None = None) -> None:
        self._rank, self._size, self.counts = rank, size, counts
        self.timeout = 5.0

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def size(self) -> int:
        return self._size

    def allgather(self, obj: Any) -> list[Any]:
        if self.counts is not None and isinstance(obj, int) and not isinstance(obj, bool):
            return list(self.counts)
        return [obj] * self._size

    def alltoall_bytes(self, buffers: Sequence[bytes | memoryview]) -> list[bytes | memoryview]:
        raise NotImplementedError("EchoComm cannot move data between ranks")
