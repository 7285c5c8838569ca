"""Readers: every row read by exactly one rank, balanced, for CSV byte ranges and Parquet/IPC pieces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

import deeprc_core as d
from deeprc_core import LocalCommunicator, SchemaError
from tests.core.conftest import EchoComm, launch_env, launcher_params
from tests.support.ranks import run_ranks

BODIES = Path(__file__).with_name("ranks_data.py")


def _dates(t: d.GlobalTable) -> np.ndarray:
    return pc.cast(t.local.column("date"), pa.int64()).to_numpy() if t.local_num_rows else np.empty(0, np.int64)


@pytest.fixture(scope="module")
def etth1_ref(etth1: Path) -> pa.Table:
    return pacsv.read_csv(etth1)


# -------------------------------------------------- simulated ranks (one process)
@pytest.mark.parametrize("p", [1, 2, 3, 4, 7])
def test_csv_byte_ranges_cover_every_row_once(etth1: Path, etth1_ref: pa.Table, p: int) -> None:
    parts = [d.read_csv(etth1, comm=EchoComm(r, p)) for r in range(p)]
    dates = np.concatenate([_dates(t) for t in parts])
    assert (dates == pc.cast(etth1_ref.column("date"), pa.int64()).to_numpy()).all()  # every row once, in order
    rows = [t.local_num_rows for t in parts]
    assert max(rows) - min(rows) < 0.01 * len(etth1_ref) + 2  # byte ranges: balanced to a few lines
    for t in parts:
        assert t.schema.equals(etth1_ref.schema)


def _write_csv(path: Path, text: str) -> Path:
    path.write_bytes(text.encode())
    return path


def test_csv_several_files_crlf_bom_and_no_final_newline(tmp_path: Path) -> None:
    a = _write_csv(tmp_path / "a.csv", "\ufeffid,v\r\n" + "".join(f"{i},{i * 0.5}\r\n" for i in range(10)))
    b = _write_csv(tmp_path / "b.csv", "id,v\n" + "\n".join(f"{i},{i * 0.5}" for i in range(10, 25)))
    for p in (1, 2, 3, 5, 30):
        parts = [d.read_csv([a, b], comm=EchoComm(r, p)) for r in range(p)]
        ids = np.concatenate([t.local.column("id").to_numpy() for t in parts if t.local_num_rows])
        assert ids.tolist() == list(range(25)), p
        assert all(t.column_names == ["id", "v"] for t in parts)
    # a directory is read in sorted order
    assert d.read_csv(tmp_path, comm=LocalCommunicator()).local.column("id").to_pylist() == list(range(25))


def test_csv_columns_and_types(etth1: Path) -> None:
    t = d.read_csv(etth1, columns=["OT", "HUFL"], comm=LocalCommunicator(), column_types={"OT": pa.float32()})
    assert t.column_names == ["OT", "HUFL"] and t.schema.field("OT").type == pa.float32()


def test_csv_errors_are_clear(tmp_path: Path, etth1: Path) -> None:
    comm = LocalCommunicator()
    with pytest.raises(FileNotFoundError, match="read_csv: .*none.* do not exist"):
        d.read_csv(tmp_path / "none", comm=comm)
    with pytest.raises(FileNotFoundError, match="no CSV files"):
        d.read_csv(str(tmp_path / "*.nothing"), comm=comm)
    with pytest.raises(SchemaError, match=r"no column\(s\) \['nope'\]"):
        d.read_csv(etth1, columns=["nope"], comm=comm)
    gz = tmp_path / "x.csv.gz"
    gz.write_bytes(b"")
    with pytest.raises(ValueError, match="compressed"):
        d.read_csv(gz, comm=comm)
    a = _write_csv(tmp_path / "h1.csv", "a,b\n1,2\n")
    b = _write_csv(tmp_path / "h2.csv", "a,c\n1,2\n")
    with pytest.raises(ValueError, match="header"):
        d.read_csv([a, b], comm=comm)
    bad = _write_csv(tmp_path / "bad.csv", "a,b\n1,2\n3,4,5\n")
    with pytest.raises(pa.ArrowInvalid):
        d.read_csv(bad, comm=comm)


def test_csv_header_only_and_types_agreed_across_ranks(tmp_path: Path) -> None:
    empty = _write_csv(tmp_path / "e.csv", "a,b\n")
    t = d.read_csv(empty, comm=LocalCommunicator())
    assert t.num_rows == 0 and t.column_names == ["a", "b"]
    # ints in the first half, floats in the second: both ranks must agree on float64
    f = _write_csv(
        tmp_path / "m.csv", "a\n" + "".join(f"{i}\n" for i in range(50)) + "".join(f"{i}.5\n" for i in range(50))
    )

    class TypesComm(EchoComm):
        def allgather(self, obj):  # type: ignore[no-untyped-def]
            if isinstance(obj, list) and obj and isinstance(obj[0], tuple):
                return [[("a", pa.int64())], [("a", pa.float64())]]
            return super().allgather(obj)

    parts = [d.read_csv(f, comm=TypesComm(r, 2)) for r in range(2)]
    assert [t.schema.field("a").type for t in parts] == [pa.float64(), pa.float64()]


def _pieces_dir(tmp_path: Path, fmt: str) -> tuple[Path, int]:
    """Several files of uneven sizes, several row groups / record batches each; a global id column."""
    folder = tmp_path / fmt
    folder.mkdir()
    start = 0
    for i, (n, group) in enumerate([(37, 10), (5, 2), (0, 4), (64, 16), (23, 23)]):
        t = pa.table({"gid": np.arange(start, start + n), "x": np.arange(start, start + n) * 0.5})
        if fmt == "parquet":
            pq.write_table(t, folder / f"part-{i}.parquet", row_group_size=group)
        else:
            feather.write_feather(t, str(folder / f"part-{i}.arrow"), chunksize=group, compression="uncompressed")
        start += n
    (folder / "_SUCCESS").write_text("")  # ignored: starts with "_"
    return folder, start


@pytest.mark.parametrize("fmt", ["parquet", "ipc"])
@pytest.mark.parametrize("p", [1, 2, 3, 4])
def test_directory_of_pieces_every_row_once_and_balanced(tmp_path: Path, fmt: str, p: int) -> None:
    folder, total = _pieces_dir(tmp_path, fmt)
    reader = d.read_parquet if fmt == "parquet" else d.read_ipc
    parts = [reader(folder, comm=EchoComm(r, p)) for r in range(p)]
    ids = np.concatenate([t.local.column("gid").to_numpy() for t in parts if t.local_num_rows])
    assert ids.tolist() == list(range(total))
    rows = [t.local_num_rows for t in parts]
    assert max(rows) - min(rows) <= 1 and sum(rows) == total
    cols = [reader(folder, columns=["x"], comm=EchoComm(r, p)) for r in range(p)]
    assert all(t.column_names == ["x"] for t in cols)


def test_ipc_without_memory_map_and_read_only_views(tmp_path: Path) -> None:
    folder, total = _pieces_dir(tmp_path, "ipc")
    mapped = d.read_ipc(folder, comm=LocalCommunicator())
    plain = d.read_ipc(folder, memory_map=False, comm=LocalCommunicator())
    assert mapped.local.equals(plain.local) and mapped.num_rows == total
    v = d.column_views(mapped.local, "x")[0]
    assert d.memory_is_readonly(v) and not d.is_writable(v)


@pytest.mark.parametrize("fmt", ["parquet", "ipc"])
def test_piece_reader_errors(tmp_path: Path, fmt: str) -> None:
    folder, _ = _pieces_dir(tmp_path, fmt)
    reader = d.read_parquet if fmt == "parquet" else d.read_ipc
    comm = LocalCommunicator()
    with pytest.raises(SchemaError, match="nope"):
        reader(folder, columns=["nope"], comm=comm)
    with pytest.raises(FileNotFoundError):
        reader(tmp_path / "absent", comm=comm)
    odd = pa.table({"gid": np.arange(3, dtype=np.int32), "x": np.zeros(3)})
    if fmt == "parquet":
        pq.write_table(odd, folder / "zz.parquet")
    else:
        feather.write_feather(odd, str(folder / "zz.arrow"))
    with pytest.raises(SchemaError, match="schemas differ"):
        reader(folder, comm=comm)


# ---------------------------------------------------------- real processes
@pytest.mark.parametrize(("launcher", "n"), launcher_params([("mpirun", 2), ("mpirun", 3), ("env", 4)]))
def test_etth1_csv_on_real_ranks(etth1: Path, etth1_ref: pa.Table, launcher: str, n: int) -> None:
    res = [
        r.value
        for r in run_ranks(
            BODIES,
            "read_all",
            n,
            launcher=launcher,
            env=launch_env(launcher),
            args=("csv", str(etth1), "date"),
            timeout=120,
        )
    ]
    dates = np.concatenate([v["ids"] for v in res])
    assert (dates == pc.cast(etth1_ref.column("date"), pa.int64()).to_numpy()).all()
    assert [v["rows"] for v in res] == list(res[0]["row_counts"]) and res[0]["num_rows"] == len(etth1_ref) == 17420
    ot = etth1_ref.column("OT").to_numpy()
    for v in res:  # identical on every rank, equal to one process's numbers
        assert v["mean_std"] == res[0]["mean_std"] and v["min_max"] == res[0]["min_max"]
        assert v["mean_std"]["OT"] == pytest.approx((ot.mean(), ot.std()), rel=1e-12)
        assert v["min_max"]["OT"] == (ot.min(), ot.max())
        assert v["schema"] == res[0]["schema"]


@pytest.mark.parametrize(("launcher", "n"), launcher_params([("mpirun", 2), ("mpirun", 3)]))
@pytest.mark.parametrize("fmt", ["parquet", "ipc"])
def test_pieces_on_real_ranks(tmp_path: Path, fmt: str, launcher: str, n: int) -> None:
    folder, total = _pieces_dir(tmp_path, fmt)
    res = [
        r.value
        for r in run_ranks(BODIES, "read_all", n, launcher=launcher, args=(fmt, str(folder), "gid"), timeout=120)
    ]
    assert np.concatenate([v["ids"] for v in res]).tolist() == list(range(total))
    rows = [v["rows"] for v in res]
    assert max(rows) - min(rows) <= 1
    assert res[0]["mean_std"]["x"][0] == pytest.approx(np.arange(total).mean() * 0.5)


def test_read_errors_name_the_file_and_the_part(tmp_path: Path) -> None:
    """Issue 28: a corrupt row group or a bad CSV row names the file and where in it (and keeps its type)."""
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": pa.array(range(200), pa.int64())}), path, row_group_size=100)
    meta = pq.ParquetFile(path).metadata.row_group(1).column(0)
    with open(path, "r+b") as fh:
        fh.seek(meta.dictionary_page_offset or meta.data_page_offset)
        fh.write(b"\xff" * 24)
    with pytest.raises(OSError, match=r"read_parquet: .*c\.parquet row group 1: "):
        d.read_parquet(path, comm=LocalCommunicator())
    bad = _write_csv(tmp_path / "bad.csv", "a,b\n1,2\n3,4,5\n")
    with pytest.raises(pa.ArrowInvalid, match=r"read_csv: .*bad\.csv bytes 4-\d+: .*Expected 2 columns"):
        d.read_csv(bad, comm=LocalCommunicator())
    with pytest.raises(ValueError, match="quoted name with a newline"):
        d.read_csv(_write_csv(tmp_path / "h.csv", 'a,"b\nc"\n1,2\n'), comm=LocalCommunicator())


def test_csv_types_agreed_by_parsing_again_not_by_casting(tmp_path: Path) -> None:
    """A column empty on one rank and text on another stays "" (not null); "007" stays "007" next to text."""
    f = _write_csv(tmp_path / "t.csv", "a,b\n" + "007,\n" * 50 + "x,y\n" * 50)
    ref = pacsv.read_csv(f)
    assert ref.column("a").to_pylist()[0] == "007" and ref.column("b").to_pylist()[0] == ""
    from tests.core.test_csv_properties import read_on_ranks

    parts = read_on_ranks(f, 2)
    assert [row for t in parts for row in t.to_pylist()] == ref.to_pylist()
    assert all(t.schema.equals(ref.schema) for t in parts)
