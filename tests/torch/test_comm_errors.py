"""The torch.distributed communicator and clear errors on every rank (real processes)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path[:0] = [str(Path(__file__).resolve().parents[2])]
from tests.support.ranks import mpirun_available, run_ranks  # noqa: E402

BODY = Path(__file__).with_name("ranks_comm.py")

pytestmark = [pytest.mark.torch, pytest.mark.mpi]


@pytest.mark.parametrize(
    "launcher", ["env", pytest.param("mpirun", marks=pytest.mark.skipif(not mpirun_available(), reason="no mpirun"))]
)
def test_torch_communicator_and_bad_inputs(launcher: str) -> None:
    values = [r.value for r in run_ranks(BODY, "comm_and_bad_inputs", 2, launcher=launcher, timeout=120)]
    assert {v["before_comm"] for v in values} == {"tcp" if launcher == "env" else "mpi"}
    assert {v["before_rows"] for v in values} == {17420}
    for v in values:
        assert v["kind"] == "torch"
        assert v["allgather"] == [{"rank": r, "blob": "x" * (r * 1000)} for r in range(2)]
        assert v["bcast"] == [1, "hello"]
        assert v["allreduce"] == [1, 2, -1]
        assert v["alltoall_ok"]
        assert v["shuffled_rows"] == 17420
    assert abs(sum(v["shuffled_ot_sum"] for v in values) - sum(v["ot_sum"] for v in values)) < 1e-6
    for v in values:
        e = v["errors"]
        assert "no_such" in e["missing"]
        assert "null" in e["null"] and "HULL" in e["null"]
        assert "date" in e["string"] and "numeric" in e["string"]
        assert "window" in e["window_table"]
        assert e["window_partition"] is not None and "rank(s) [1]" in e["window_partition"]
    assert values[1]["errors"]["null"].startswith("ZeroCopyError")  # the rank with the null: its own error
    assert values[0]["errors"]["null"].startswith("RankFailedError") and "rank(s) [1]" in values[0]["errors"]["null"]
