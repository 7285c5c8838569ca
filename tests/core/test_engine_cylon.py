"""The Cylon adapter: its pure naming/conversion logic without pycylon, the real thing when present."""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import pytest
from deeprc_core.comm import LocalCommunicator
from deeprc_core.engine.cylon import normalise_cylon_join, prepare_for_cylon, rename_positionally
from deeprc_core.engine.join import plan_join
from deeprc_core.engine.select import choose_engine, pycylon_available

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parent)]
from tests.support.ranks import mpirun_available, run_ranks  # noqa: E402

BODY = Path(__file__).with_name("ranks_engine.py")


def test_join_output_normalised_to_pandas_names() -> None:
    left = pa.schema([("k", pa.int64()), ("v", pa.int64()), ("a", pa.string())])
    right = pa.schema([("k", pa.int64()), ("v", pa.int64()), ("b", pa.float64())])
    plan = plan_join(left, right, on="k", how="outer")
    # what Cylon returns: every left column then every right column, prefixed
    raw = pa.table(
        {"lt-k": [1, None], "lt-v": [10, None], "lt-a": ["x", None], "rt-k": [1, 2], "rt-v": [5, 6], "rt-b": [0.5, 1.5]}
    )
    out = normalise_cylon_join(raw, left.names, right.names, plan)
    assert out.column_names == ["k", "v_x", "a", "v_y", "b"]
    assert out.column("k").to_pylist() == [1, 2]  # outer join: key coalesced from the right side


def test_rename_positionally_checks_width() -> None:
    with pytest.raises(RuntimeError, match="expected 1"):
        rename_positionally(pa.table({"a": [1], "b": [2]}), ["x"])


def test_prepare_for_cylon_decodes_dictionaries_and_rejects_decimals() -> None:
    t = pa.table({"d": pa.array(["a", "b", "a"]).dictionary_encode(), "i": [1, 2, 3]})
    prepared, _ = prepare_for_cylon(t)
    assert prepared is not None and prepared.schema.field("d").type == pa.string()
    bad, why = prepare_for_cylon(pa.table({"x": pa.array([1], pa.decimal128(5, 2)), "l": [[1]]}))
    assert bad is None and "decimal" in why and "list" in why


def test_engine_choice() -> None:
    comm = LocalCommunicator()
    assert choose_engine("arrow", comm, "join") == "arrow"
    assert choose_engine("auto", comm, "join") == "arrow"  # Cylon runs over MPI only
    with pytest.raises((ImportError, ValueError)):
        choose_engine("cylon", comm, "join")
    with pytest.raises(ValueError, match="engine must be"):
        choose_engine("spark", comm, "join")


@pytest.mark.mpi
@pytest.mark.skipif(not (pycylon_available() and mpirun_available()), reason="needs pycylon and mpirun")
def test_cylon_engine_matches_arrow_engine() -> None:
    pytest.importorskip("pycylon")
    from test_engine import check_all

    results = run_ranks(BODY, "all_ops", 2, launcher="mpirun", timeout=300, args=("5", "cylon"))
    check_all([r.value for r in results])
