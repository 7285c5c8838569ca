"""The N-rank helper itself: real processes exchange data, and a crash is reported, not hung."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.ranks import RanksFailed, mpirun_available, run_ranks

BODIES = Path(__file__).parent / "ranks_helper_bodies.py"

pytestmark = [pytest.mark.mpi, pytest.mark.compat]


@pytest.mark.parametrize("launcher", ["env", "mpirun"])
def test_two_ranks_exchange_data(launcher: str) -> None:
    if launcher == "mpirun" and not mpirun_available():
        pytest.skip("mpirun not installed")
    env = {"DEEPRC_COMM": "tcp"} if launcher == "env" else {}
    results = run_ranks(BODIES, "exchange", 2, launcher=launcher, timeout=60, env=env)
    assert [r.value["rank"] for r in results] == [0, 1]
    # Each rank received exactly the bytes the other addressed to it.
    assert results[0].value["got"] == [b"from 0 to 0", b"from 1 to 0"]
    assert results[1].value["got"] == [b"from 0 to 1", b"from 1 to 1"]
    assert results[0].value["gathered"] == [0, 10]


@pytest.mark.parametrize("launcher", ["env", "mpirun"])
def test_a_crashing_rank_is_reported_with_its_stderr(launcher: str) -> None:
    if launcher == "mpirun" and not mpirun_available():
        pytest.skip("mpirun not installed")
    env = {"DEEPRC_COMM": "tcp", "DEEPRC_COMM_TIMEOUT": "20"} if launcher == "env" else {"DEEPRC_COMM_TIMEOUT": "20"}
    start = time.monotonic()
    with pytest.raises(RanksFailed) as info:
        run_ranks(BODIES, "crash_on_rank_1", 2, launcher=launcher, timeout=60, env=env)
    assert time.monotonic() - start < 60
    message = str(info.value)
    assert "rank 1 exploded on purpose" in message
    failed = {r.rank for r in info.value.results if r.returncode != 0}
    assert 1 in failed
