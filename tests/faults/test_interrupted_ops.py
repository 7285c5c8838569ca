"""(g) A join or groupby interrupted by a rank's death leaves its input files byte-identical.

Two real ranks read two Parquet files; rank 1 dies (``os._exit``) inside the operation's first
exchange. Rank 0 must fail with an error naming rank 1, soon, and the inputs must be untouched.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.faults.bodies import digest
from tests.support.ranks import run_ranks

BODIES = Path(__file__).with_name("bodies.py")


@pytest.mark.mpi
@pytest.mark.parametrize("op", ["join", "groupby"])
def test_interrupted_op_leaves_inputs_identical(op: str, tmp_path: Path, record: Any) -> None:
    rng = np.random.default_rng(7)
    n = 20_000
    pq.write_table(pa.table({"k": rng.integers(0, 500, n), "v": rng.random(n)}), tmp_path / "left.parquet")
    pq.write_table(pa.table({"k": np.arange(500), "w": rng.random(500)}), tmp_path / "right.parquet")
    inputs = [str(tmp_path / "left.parquet"), str(tmp_path / "right.parquet")]
    before = digest(inputs)
    stats = {p: Path(p).stat() for p in inputs}
    t0 = time.monotonic()
    res = run_ranks(
        BODIES,
        "interrupted_op",
        2,
        env={"DEEPRC_COMM": "tcp", "DEEPRC_COMM_TIMEOUT": "60"},
        timeout=120,
        args=(op, str(tmp_path)),
        expect_failure=True,
    )
    wall = time.monotonic() - t0
    assert res[1].returncode == 9 and res[1].value is None
    v0 = res[0].value
    assert v0 is not None and v0["error"] is not None, res[0].stderr
    assert "rank 1" in v0["message"], v0
    died = float((tmp_path / "died").read_text())
    detection = v0["at"] - died
    assert detection < 10, detection
    assert digest(inputs) == before
    assert all(Path(p).stat().st_mtime_ns == stats[p].st_mtime_ns for p in inputs)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["died", "left.parquet", "right.parquet"]
    record(
        f"g_interrupted_{op}",
        fault=f"rank 1 of 2 killed (os._exit) inside the {op}'s first exchange",
        detection_s=round(detection, 4),
        error_on_rank0=f"{v0['error']}: {v0['message'][:160]}",
        inputs_identical=True,
        lost="nothing (inputs byte-identical, no file written)",
        wall_s=round(wall, 2),
    )
