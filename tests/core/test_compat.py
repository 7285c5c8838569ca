"""What must hold on every supported pyarrow/numpy (CI runs this also with pyarrow 10 + numpy 1.24)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import deeprc_core as d
from tests.core.conftest import launcher_params
from tests.support.ranks import REPO, run_ranks

pytestmark = pytest.mark.compat
PA_MAJOR = int(pa.__version__.split(".")[0])


def test_core_imports_no_framework_and_no_launcher() -> None:
    code = (
        "import sys, deeprc_core, deeprc_core.views, deeprc_core.batches, deeprc_core.readers;"
        "bad = [m for m in ('torch', 'tensorflow', 'keras', 'radical', 'radical.pilot', 'jax') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr


def test_expression_filter_and_projection_work_on_this_pyarrow() -> None:
    g = d.GlobalTable.from_arrow(pa.table({"a": np.arange(10)}), d.LocalCommunicator())
    assert g.filter(pc.field("a") >= 5).local.column("a").to_pylist() == [5, 6, 7, 8, 9]
    assert g.with_column("b", pc.field("a") + 1).local.column("b").to_pylist()[:2] == [1, 2]


def test_zero_copy_path_without_arrow_dlpack() -> None:
    # On pyarrow < 15 there is no Array.__dlpack__: the view goes through the buffer protocol
    # (still zero-copy) and numpy's own DLPack export.
    arr = pa.array(np.arange(6, dtype=np.float32)).slice(1)
    v = d.column_view(pa.table({"x": arr}), "x")
    assert d.views.address(v) == arr.buffers()[1].address + 4 and hasattr(v, "__dlpack__")
    assert d.views.address(np.from_dlpack(v)) == d.views.address(v)
    assert hasattr(pa.Array, "__dlpack__") == (PA_MAJOR >= 15)


def test_tensor_type_needs_pyarrow_12_and_says_so() -> None:
    t = pa.table({"a": [1.0], "b": [2.0]})
    if PA_MAJOR >= 12:
        assert d.column_view(d.pack_columns(t, ["a", "b"], tensor=True), "features").shape == (1, 2)
    else:
        with pytest.raises(ImportError, match=r"pyarrow >= 12.*tensor=False"):
            d.pack_columns(t, ["a", "b"], tensor=True)


def test_chunked_statistics_and_group_windows_on_this_pyarrow() -> None:
    t = pa.concat_tables([pa.table({"v": [1.0, 2.0], "g": [0, 0]}), pa.table({"v": [3.0, 4.0], "g": [0, 1]})])
    g = d.GlobalTable.from_arrow(t, d.LocalCommunicator())
    assert g.global_mean_std(["v"])["v"][0] == 2.5
    tb = d.TableBatches(g, "v", "v", 4, window=d.Window(2, 1, group="g"))
    assert np.concatenate([b.index for b in tb.epoch(0)]).tolist() == [0]


@pytest.mark.parametrize(("launcher", "n"), launcher_params([("mpirun", 2)]))
def test_readme_example_on_two_ranks(etth1: Path, launcher: str, n: int) -> None:
    res = [
        r
        for r in run_ranks(
            REPO / "examples" / "core_etth1.py", "main", n, launcher=launcher, args=(str(etth1),), timeout=90
        )
    ]
    assert sum(r.value["rows"] for r in res) == 17420 and res[0].value["mean"] == res[1].value["mean"]
    assert "rank 1 of 2:" in res[1].stdout and "global mean of OT = 13.3247" in res[0].stdout
