"""(f) Bad inputs through both adapters on two real ranks: a clear error on every rank, in bounded time.

Each rank runs every case of :data:`bodies.ERROR_CASES` through deeprc_torch's ``loader`` and
deeprc_tf's ``DeepRCSequence`` (the TCP communicator between them): every case must raise on
both ranks, the message naming the column, parameter or rank at fault, well within the
communicator's timeout; misaligned and memory-mapped buffers must give the right values.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.faults.bodies import ERROR_CASES, VALUE_CASES
from tests.support.ranks import run_ranks

BODIES = Path(__file__).with_name("bodies.py")

#: What each case's message must name (on the rank at fault, and on the others through agree()).
NAMES = {
    "nulls in features (rank 1 only)": "'with_nulls' has 1 null",
    "string column": "'s' has type string",
    "bool column": "'b' has type bool",
    "timestamp column": "'ts' has type timestamp",
    "partition empty on rank 1": "rank(s) [1]",
    "batch_size 0": "batch_size must be a positive integer, got 0",
    "batch_size '8'": "batch_size must be a positive integer, got '8'",
    "batch_size 2.7": "batch_size must be a positive integer, got 2.7",
    "window longer than a partition": "rank(s) [1] have fewer samples ([0])",
}
#: Seconds within which every rank must have its error (the collectives' timeout is 60 s here).
BOUND_S = 10.0


@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.parametrize(
    "adapter", [pytest.param("torch", marks=pytest.mark.torch), pytest.param("tf", marks=pytest.mark.tensorflow)]
)
def test_bad_inputs_fail_every_rank_clearly(adapter: str, tmp_path: Path, record: Any) -> None:
    assert set(NAMES) == set(ERROR_CASES)
    t0 = time.monotonic()
    env = {"DEEPRC_COMM": "tcp", "DEEPRC_COMM_TIMEOUT": "60", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    res = [r.value for r in run_ranks(BODIES, "bad_inputs", 2, env=env, timeout=240, args=(adapter, str(tmp_path)))]
    figures: dict[str, Any] = {}
    for case, needle in NAMES.items():
        per_rank = [res[r][case] for r in (0, 1)]
        for r, got in enumerate(per_rank):
            assert got["error"] is not None, f"{adapter}: {case}: rank {r} raised nothing"
            assert needle in got["message"], f"{adapter}: {case}: rank {r}: {got['message']}"
            assert got["seconds"] < BOUND_S, (case, r, got)
        figures[case] = {
            "errors": sorted({g["error"] for g in per_rank}),
            "slowest_rank_s": round(max(g["seconds"] for g in per_rank), 4),
        }
    for case in VALUE_CASES:
        assert res[0][case]["ok"] and res[1][case]["ok"], (case, res[0][case], res[1][case])
        figures[case] = {"values_right_on_every_rank": True}
    record(
        f"f_bad_inputs_{adapter}",
        fault=f"bad inputs through deeprc_{adapter} on 2 ranks",
        cases=figures,
        bound_s=BOUND_S,
        lost="nothing",
        wall_s=round(time.monotonic() - t0, 2),
    )
