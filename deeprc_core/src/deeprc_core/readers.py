"""Readers that give each rank its own share of the files, reading nobody else's data.

* Parquet and Arrow IPC (Feather v2): the global rows (files in the given order, then
  row groups / record batches) are split into P equal ranges; each rank reads only the
  row groups overlapping its range and slices them, so every row is read by exactly one
  rank and counts differ by at most one.
* CSV: the bytes of all files (headers excluded) are split into P ranges; each range is
  moved to the next row boundary, so every row belongs to exactly one rank. Quoted values
  may hold newlines: a newline ends a row only outside quotes, and whether an offset is
  inside quotes is decided exactly, by pyarrow's quoting rules, with one allgather of
  each range's quote summary (:mod:`._csv_quotes`). Column types are inferred per rank
  and then agreed; a rank whose inference differs parses its rows again with the agreed
  types, so the table is the one pyarrow reads in one process. Compressed files are
  refused (they cannot be split by byte ranges).

Every validation error (missing file, missing column, files whose schemas differ, a
line that does not parse in one rank's range, a row group that cannot be read) is
agreed, so it raises on every rank, naming the rank, the file and the error.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from . import _csv_quotes as q
from .comm import Communicator, agree, get_communicator
from .errors import SchemaError
from .table import GlobalTable, check_columns

PathLike = str | os.PathLike[str]

#: Suffixes of compressed files, which byte ranges cannot split.
_COMPRESSED = (".gz", ".bz2", ".zst", ".xz", ".lz4", ".zip")


def _expand(paths: PathLike | Sequence[PathLike], suffixes: tuple[str, ...]) -> list[str]:
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files: list[str] = []
    for item in items:
        p = os.fspath(item)
        if os.path.isdir(p):
            found = sorted(
                str(f)
                for f in Path(p).rglob("*")
                if f.is_file() and f.name.endswith(suffixes) and not f.name.startswith((".", "_"))
            )
            files.extend(found)
        elif any(ch in p for ch in "*?["):
            files.extend(sorted(glob.glob(p)))
        else:
            files.append(p)
    return files


def _my_range(total: int, rank: int, size: int) -> tuple[int, int]:
    return total * rank // size, total * (rank + 1) // size


def _read_ranges(pieces: list[tuple[Any, int]], lo: int, hi: int, read_piece: Any) -> list[pa.Table]:
    """Read the pieces (handle, rows) overlapping global rows [lo, hi) and slice them."""
    out, start = [], 0
    for handle, rows in pieces:
        end = start + rows
        if end > lo and start < hi:
            table = read_piece(handle)
            a, b = max(lo - start, 0), min(hi, end) - start
            out.append(table.slice(a, b - a))
        start = end
    return out


def _agreed_read(
    comm: Communicator, what: str, pieces: list[tuple[Any, int]], lo: int, hi: int, read_piece: Any
) -> list[pa.Table]:
    """:func:`_read_ranges`, with a failure (a corrupt row group, say) raised on every rank."""
    err: Exception | None = None
    tables: list[pa.Table] = []
    try:
        tables = _read_ranges(pieces, lo, hi, read_piece)
    except Exception as exc:
        err = exc
    agree(comm, err, what)
    return tables


def _same_schemas(schemas: list[pa.Schema], files: list[str], what: str) -> None:
    """Every file must have the first file's columns and types (metadata aside)."""
    ref = schemas[0].remove_metadata()
    bad = [f"{f}: {s.remove_metadata()}" for f, s in zip(files, schemas) if not s.remove_metadata().equals(ref)]
    if bad:
        raise SchemaError(f"{what}: these files' schemas differ from {files[0]} ({ref}): " + "; ".join(bad))


def _finish(tables: list[pa.Table], schema: pa.Schema, comm: Communicator) -> GlobalTable:
    local = pa.concat_tables(tables) if tables else schema.empty_table()
    return GlobalTable(local, comm)


def read_parquet(
    path: PathLike | Sequence[PathLike], columns: Sequence[str] | None = None, comm: Communicator | None = None
) -> GlobalTable:
    """Read Parquet file(s) or a directory of them as a GlobalTable (collective).

    The global rows (files in the given order — a directory's files sorted by path —
    then row groups) are cut into P equal ranges; rank r reads the row groups that
    overlap range r and keeps its rows, so local counts differ by at most one. Only
    footers are read by every rank; a row group is read by the rank(s) whose range it
    overlaps (at most two ranks share a row group at each cut).
    """
    comm = get_communicator() if comm is None else comm
    err: Exception | None = None
    files: list[str] = []
    metas: list[pq.ParquetFile] = []
    schema = pa.schema([])
    try:
        files = _expand(path, (".parquet", ".pq", ".parq"))
        if not files:
            raise FileNotFoundError(f"read_parquet: no Parquet files at {path!r}")
        for f in files:
            if not os.path.exists(f):
                raise FileNotFoundError(f"read_parquet: {f} does not exist")
        metas = [pq.ParquetFile(f) for f in files]
        _same_schemas([m.schema_arrow for m in metas], files, "read_parquet")
        schema = metas[0].schema_arrow
        if columns is not None:
            check_columns(schema, columns, "read_parquet")
            schema = pa.schema([schema.field(c) for c in columns])
    except Exception as exc:
        err = exc
    agree(comm, err, "read_parquet")
    pieces = [((i, g), m.metadata.row_group(g).num_rows) for i, m in enumerate(metas) for g in range(m.num_row_groups)]
    total = sum(r for _, r in pieces)
    lo, hi = _my_range(total, comm.rank, comm.size)
    cols = list(columns) if columns is not None else None

    def read(handle: tuple[int, int]) -> pa.Table:
        i, g = handle
        try:
            return metas[i].read_row_group(g, columns=cols)
        except Exception as exc:
            raise _named(exc, f"read_parquet: {files[i]} row group {g}")  # noqa: B904 (_named chains it)

    return _finish(_agreed_read(comm, "read_parquet", pieces, lo, hi, read), schema, comm)


def read_ipc(
    path: PathLike | Sequence[PathLike],
    columns: Sequence[str] | None = None,
    comm: Communicator | None = None,
    memory_map: bool = True,
) -> GlobalTable:
    """Read Arrow IPC / Feather v2 file(s) as a GlobalTable (collective).

    With ``memory_map`` (default) the columns are zero-copy, read-only views of the
    mapped file; their buffers may not be 64-byte aligned (see
    :func:`deeprc_core.views.ensure_aligned` before handing them to TensorFlow).
    """
    comm = get_communicator() if comm is None else comm
    err: Exception | None = None
    files: list[str] = []
    schema = pa.schema([])
    pieces: list[tuple[Any, int]] = []
    try:
        files = _expand(path, (".arrow", ".feather", ".ipc"))
        if not files:
            raise FileNotFoundError(f"read_ipc: no Arrow IPC files at {path!r}")
        missing = [f for f in files if not os.path.exists(f)]
        if missing:
            raise FileNotFoundError(f"read_ipc: {missing} do not exist")
        # Counting rows through a memory map touches only each batch's metadata, never its data.
        counters = [ipc.open_file(pa.memory_map(f, "r")) for f in files]
        _same_schemas([r.schema for r in counters], files, "read_ipc")
        schema = counters[0].schema
        if columns is not None:
            check_columns(schema, columns, "read_ipc")
            schema = pa.schema([schema.field(c) for c in columns])
        for i, r in enumerate(counters):
            for b in range(r.num_record_batches):
                pieces.append(((i, b), r.get_batch(b).num_rows))
    except Exception as exc:
        err = exc
    agree(comm, err, "read_ipc")
    readers = counters if memory_map else [ipc.open_file(pa.OSFile(f, "rb")) for f in files]
    total = sum(n for _, n in pieces)
    lo, hi = _my_range(total, comm.rank, comm.size)

    def read(handle: tuple[int, int]) -> pa.Table:
        i, b = handle
        try:
            t = pa.Table.from_batches([readers[i].get_batch(b)])
        except Exception as exc:
            raise _named(exc, f"read_ipc: {files[i]} record batch {b}")  # noqa: B904 (_named chains it)
        return t.select(list(columns)) if columns is not None else t

    return _finish(_agreed_read(comm, "read_ipc", pieces, lo, hi, read), schema, comm)


_UNITS = ("s", "ms", "us", "ns")


def _common_type(types: list[pa.DataType]) -> pa.DataType:
    """The type pyarrow would infer for a column whose slices inferred ``types``."""
    real = [t for t in types if not pa.types.is_null(t)]
    if not real:
        return pa.null()
    if all(t == real[0] for t in real):
        return real[0]
    if all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in real):
        return pa.float64()
    if all(pa.types.is_timestamp(t) for t in real) and len({t.tz for t in real}) == 1:
        return max(real, key=lambda t: _UNITS.index(t.unit))  # the finest unit holds every value
    return pa.string()


def _named(exc: Exception, where: str) -> Exception:
    """``exc`` with ``where`` (file, row group or byte range) in front of its message, same type if possible."""
    try:
        named = type(exc)(f"{where}: {exc}")
    except Exception:  # a type whose constructor wants more than a message
        return exc
    named.__cause__ = exc
    return named


def read_csv(
    paths: PathLike | Sequence[PathLike],
    columns: Sequence[str] | None = None,
    comm: Communicator | None = None,
    delimiter: str = ",",
    column_types: dict[str, pa.DataType] | None = None,
    timestamp_parsers: Sequence[str] | None = None,
) -> GlobalTable:
    """Read CSV file(s) with a header row as a GlobalTable (collective).

    Each rank reads only its byte range; every data line goes to exactly one rank, in
    file order. Types are inferred per rank and agreed across ranks (give
    ``column_types`` to fix them).
    """
    comm = get_communicator() if comm is None else comm
    err: Exception | None = None
    files: list[str] = []
    headers: list[tuple[list[str], int, int]] = []
    try:
        files = _expand(paths, (".csv", ".txt", ".tsv"))
        if not files:
            raise FileNotFoundError(f"read_csv: no CSV files at {paths!r}")
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise FileNotFoundError(f"read_csv: {missing} do not exist")
        packed = [f for f in files if f.endswith(_COMPRESSED)]
        if packed:
            raise ValueError(
                f"read_csv: {packed} are compressed, so they cannot be split by byte ranges; "
                "decompress them first, or convert them once to Parquet and use read_parquet"
            )
        for f in files:
            with open(f, "rb") as fh:
                first = fh.readline()
                size = os.fstat(fh.fileno()).st_size
            header_text = first.decode("utf-8-sig").rstrip("\r\n")  # utf-8-sig drops a byte-order mark
            if first.count(b'"') % 2:
                raise ValueError(f"read_csv: the header of {f} has a quoted name with a newline in it; rename it")
            names = [n.strip().strip('"') for n in header_text.split(delimiter)]
            headers.append((names, len(first), size))
        if any(h[0] != headers[0][0] for h in headers):
            bad = [files[i] for i, h in enumerate(headers) if h[0] != headers[0][0]]
            raise ValueError(f"read_csv: header of {bad} differs from {files[0]}: {headers[0][0]}")
        if columns is not None:
            missing = [c for c in columns if c not in headers[0][0]]
            if missing:
                raise SchemaError(f"read_csv: no column(s) {missing} in {files[0]}; it has {headers[0][0]}")
    except Exception as exc:
        err = exc
    agree(comm, err, "read_csv")
    names = headers[0][0]
    sizes = np.array([h[2] - h[1] for h in headers], dtype=np.int64)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    lo, hi = _my_range(int(bounds[-1]), comm.rank, comm.size)
    # This rank's part of each file: (file index, first and last+1 nominal byte, absolute in the file).
    spans = [
        (
            i,
            int(max(lo, bounds[i]) - bounds[i]) + headers[i][1],
            int(min(hi, bounds[i + 1]) - bounds[i]) + headers[i][1],
        )
        for i in range(len(files))
        if min(hi, bounds[i + 1]) > max(lo, bounds[i])
    ]
    # 1. Each span's effect on "inside quotes?"; one allgather gives every rank the state at its start.
    scanned: dict[int, tuple[int, bytes, q.Effect]] = {}
    where = ""
    try:
        for i, a, b in spans:
            where = f"read_csv: {files[i]}"
            with open(files[i], "rb") as fh:
                buf = q.read_runs_whole(fh, a - 1, b - a + 1)  # from the byte before the span
            scanned[i] = (a - 1, buf, q.effect(buf, delimiter, b - a + 1))
        err = None
    except Exception as exc:
        err = _named(exc, where)
    agree(comm, err, "read_csv (reading)")
    effects = comm.allgather({i: eff for i, (_, _, eff) in scanned.items()})
    # 2. Each span moves to the row boundaries outside quotes; parse it.
    convert = pacsv.ConvertOptions(
        column_types=column_types or {},
        include_columns=list(columns) if columns is not None else None,
        timestamp_parsers=list(timestamp_parsers) if timestamp_parsers else None,
    )
    chunks: list[tuple[str, pa.Buffer]] = []
    tables: list[pa.Table] = []
    try:
        for i, a, b in spans:
            inside = 0  # the state at a: every earlier rank's effect on this file, in rank order
            for r in range(comm.rank):
                inside = effects[r].get(i, q.IDENTITY)[inside]
            base, buf, eff = scanned[i]
            floor = headers[i][1]
            with open(files[i], "rb") as fh:
                start = q.row_start(fh, a, floor, inside, delimiter)
                stop = q.row_start(fh, b, floor, eff[inside], delimiter)
                if stop <= start:
                    continue
                data = _span_bytes(fh, buf, base, start, stop)
            where = f"read_csv: {files[i]} bytes {start}-{stop}"
            chunks.append((where, data))
            tables.append(_parse_csv(data, names, delimiter, convert))
        err = None
    except Exception as exc:  # a bad line in one rank's range must fail every rank, not strand them
        err = _named(exc, where) if where else exc
    agree(comm, err, "read_csv (parsing)")
    del scanned
    # 3. Agree the schema: inference on different slices can disagree (int here, float there, all
    # empty elsewhere). Slices that inferred another type are parsed again with the agreed one, so
    # every value is what pyarrow reads in one process (a cast would turn "007" into "7").
    names_out = list(columns) if columns is not None else names
    mine = None
    if tables:
        mine = [(n, _common_type([t.schema.field(n).type for t in tables])) for n in names_out]
    all_types = comm.allgather(mine)
    ref = next((ts for ts in all_types if ts is not None), None)
    if ref is None:  # no rank read anything: an empty file
        schema = pa.schema([(c, pa.string()) for c in names_out])
        return GlobalTable(schema.empty_table(), comm)
    schema = pa.schema(
        [(ref[j][0], _common_type([ts[j][1] for ts in all_types if ts is not None])) for j in range(len(ref))]
    )
    forced = pacsv.ConvertOptions(
        column_types={f.name: f.type for f in schema if not pa.types.is_null(f.type)},
        include_columns=convert.include_columns,
        timestamp_parsers=convert.timestamp_parsers,
    )
    try:
        for k, (span, data) in enumerate(chunks):
            where = span
            if tables[k].schema != schema:
                tables[k] = _parse_csv(data, names, delimiter, forced).cast(schema)
        err = None
    except Exception as exc:
        err = _named(exc, where)
    agree(comm, err, "read_csv (agreeing types)")
    local = pa.concat_tables(tables) if tables else schema.empty_table()
    return GlobalTable(local, comm)


def _span_bytes(fh: Any, buf: bytes, base: int, start: int, stop: int) -> pa.Buffer:
    """Bytes [start, stop) of the file: from ``buf`` (the file's bytes from ``base``) where it
    holds them, the rest read from ``fh``."""
    lo, hi = start - base, stop - base
    if 0 <= lo and hi <= len(buf):
        return pa.py_buffer(memoryview(buf)[lo:hi])  # no copy
    head = buf[lo:] if 0 <= lo < len(buf) else b""
    fh.seek(start + len(head))
    return pa.py_buffer(head + fh.read(stop - start - len(head)))


def _parse_csv(data: pa.Buffer, names: list[str], delimiter: str, convert: pacsv.ConvertOptions) -> pa.Table:
    """Parse one span's rows (no header line) with pyarrow."""
    # Newlines inside quoted values need pyarrow's slower block splitter; only where there are quotes.
    quoted = bool((np.frombuffer(data, dtype=np.uint8) == q.QUOTE).any())
    parse = pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=quoted)
    read = pacsv.ReadOptions(column_names=names, block_size=max(1 << 20, min(data.size + 1, 1 << 26)))
    return pacsv.read_csv(pa.BufferReader(data), read_options=read, parse_options=parse, convert_options=convert)
