"""Property tests of read_csv: random CSVs read on 1–4 ranks give exactly the table pyarrow reads in one process.

The CSVs have quoted values with delimiters, escaped quotes and newlines (LF and CRLF), stray
quotes inside unquoted values, a UTF-8 byte-order mark, empty lines, and sometimes no final
newline: every kind of byte a range boundary can fall on. The ranks are threads in one
process with a real allgather between them (the reader's quote states and types must be
exchanged), so many examples run in seconds.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from deeprc_core.comm.base import BaseCommunicator

import deeprc_core as d

pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


class _Group:
    """What P thread-ranks share: one slot each and a barrier."""

    def __init__(self, size: int) -> None:
        self.slots: list[Any] = [None] * size
        self.barrier = threading.Barrier(size, timeout=30)


class ThreadComm(BaseCommunicator):
    """Rank ``rank`` of a group of threads: allgather really exchanges the objects."""

    kind = "threads"

    def __init__(self, group: _Group, rank: int) -> None:
        self._group, self._rank = group, rank
        self.timeout = 30.0

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def size(self) -> int:
        return len(self._group.slots)

    def allgather(self, obj: Any) -> list[Any]:
        g = self._group
        g.barrier.wait()
        g.slots[self._rank] = obj
        g.barrier.wait()
        out = list(g.slots)
        g.barrier.wait()
        return out

    def alltoall_bytes(self, buffers: Sequence[bytes | memoryview]) -> list[bytes | memoryview]:
        raise NotImplementedError("the readers never move data between ranks")


def read_on_ranks(paths: Any, p: int, **kw: Any) -> list[pa.Table]:
    """read_csv on ``p`` thread-ranks; each rank's local table, in rank order."""
    group = _Group(p)
    out: list[Any] = [None] * p

    def rank(r: int) -> None:
        try:
            out[r] = d.read_csv(paths, comm=ThreadComm(group, r), **kw).local
        except BaseException as exc:  # reported below, with the rank
            out[r] = exc
            group.barrier.abort()

    threads = [threading.Thread(target=rank, args=(r,), daemon=True) for r in range(p)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for r, v in enumerate(out):
        if isinstance(v, BaseException) and not isinstance(v, threading.BrokenBarrierError):
            raise AssertionError(f"rank {r} of {p} failed") from v
    assert all(isinstance(v, pa.Table) for v in out), out
    return out


def reference(path: Path, **convert: Any) -> pa.Table:
    """What pyarrow reads in one process (newlines in quoted values allowed)."""
    return pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(**convert),
    )


# ------------------------------------------------------------------ random CSV text
_TEXT = st.lists(st.sampled_from(["a", "b", " ", ",", '"', "\n", "\r\n", "é"]), max_size=8).map("".join)


def _text_field(value: str, quote: bool) -> str:
    plain_ok = not any(c in value for c in ',\n\r"') and value == value.strip() and value
    if quote or not plain_ok:
        return '"' + value.replace('"', '""') + '"'
    return value


@st.composite
def _field(draw: Any, kind: str) -> str:
    if kind == "num":
        v = draw(st.one_of(st.none(), st.integers(-1000, 1000), st.sampled_from([0.5, -2.25, 1e3])))
        s = "" if v is None else str(v)
        return f'"{s}"' if s and draw(st.booleans()) and draw(st.booleans()) else s
    if draw(st.integers(0, 9)) == 0:  # a stray quote inside an unquoted value: literal text to pyarrow
        return draw(st.sampled_from(['a"b', 'ab"', 'b""a', '5"10']))
    return _text_field(draw(_TEXT), draw(st.booleans()))


@st.composite
def csv_text(draw: Any, kinds: Sequence[str], header: bool = True) -> str:
    """A CSV (with or without its header) of columns of ``kinds`` ("num" or "text")."""
    ends = draw(st.lists(st.sampled_from(["\n", "\r\n"]), min_size=1, max_size=2))
    lines = [",".join(f"c{j}" for j in range(len(kinds)))] if header else []
    for _ in range(draw(st.integers(1, 12))):
        if draw(st.integers(0, 7)) == 0:
            lines.append("")  # an empty line: pyarrow skips it
        row = [draw(_field(k)) for k in kinds]
        if len(kinds) == 1 and row[0] == "":
            row[0] = '""' if kinds[0] == "text" else "0"  # a lone empty value is an empty line, not a row
        lines.append(",".join(row))
    text = "".join(line + draw(st.sampled_from(ends)) for line in lines)
    if draw(st.booleans()):
        text = text.rstrip("\r\n")  # no final newline (the last value is never an unquoted newline)
    return ("\ufeff" if header and draw(st.booleans()) else "") + text


_KINDS = st.lists(st.sampled_from(["num", "text"]), min_size=1, max_size=3)


def _rows(tables: list[pa.Table]) -> list[dict[str, Any]]:
    return [row for t in tables for row in t.to_pylist()]


@settings(max_examples=60, deadline=None)
@given(st.data(), _KINDS, st.integers(1, 4))
def test_read_csv_on_p_ranks_equals_pyarrow_in_one_process(data: Any, kinds: list[str], p: int) -> None:
    text = data.draw(csv_text(kinds))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.csv"
        path.write_bytes(text.encode())
        ref = reference(path)
        parts = read_on_ranks(path, p)
    for t in parts:
        assert t.schema.equals(ref.schema), (t.schema, ref.schema)
    assert _rows(parts) == ref.to_pylist()


@settings(max_examples=30, deadline=None)
@given(st.data(), _KINDS, st.integers(1, 3), st.integers(1, 4))
def test_read_csv_of_a_folder_of_mixed_files_equals_pyarrow(data: Any, kinds: list[str], n: int, p: int) -> None:
    """Several files (BOM or not, CRLF or LF, final newline or not, quoted newlines) read as one folder."""
    types = {f"c{j}": pa.float64() if k == "num" else pa.string() for j, k in enumerate(kinds)}
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for k in range(n):
            files.append(Path(tmp) / f"part-{k}.csv")
            files[-1].write_bytes(data.draw(csv_text(kinds)).encode())
        ref = pa.concat_tables([reference(f, column_types=types) for f in files])
        parts = read_on_ranks(tmp, p, column_types=types)
    assert _rows(parts) == ref.to_pylist()
    assert all(t.schema.equals(ref.schema) for t in parts)


def test_quoted_newlines_at_every_boundary() -> None:
    """A fixed CSV where every byte offset is a boundary of some split: rows with quoted LF, CRLF and quotes."""
    text = 'a,b\r\n1,"x\ny"\r\n2,"""q""\r\n"\r\n3,z"w\n\n4,",\n,"\n5,""'
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.csv"
        path.write_bytes(text.encode())
        ref = reference(path)
        assert ref.num_rows == 5
        for p in (1, 2, 3, 4, 8, len(text)):
            assert _rows(read_on_ranks(path, p)) == ref.to_pylist(), p
