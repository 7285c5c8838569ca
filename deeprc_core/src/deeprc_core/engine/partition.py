"""Cutting a rank's partition into one part per destination rank, and the hash shuffle.

A partition is cut by destination with one boolean filter per destination (few ranks) or
one stable counting sort of the destination ids and one ``take`` (many ranks), part by
part as the exchange asks for them.
Parts are re-chunked into record batches of bounded size, so no single IPC message
(and no buffer) of an exchange exceeds :data:`MAX_BATCH_BYTES`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa

from ..comm.base import Communicator
from ..exchange import exchange_parts
from .hashing import hash_rows, partition_of

#: Up to this many destinations, parts are cut by one boolean filter each instead of a take.
FILTER_MAX_PARTS = 4

#: Upper bound on the bytes of one record batch in an exchange (well below 2 GiB).
MAX_BATCH_BYTES = 256 * 1024 * 1024


def bounded_batches(table: pa.Table, max_bytes: int = MAX_BATCH_BYTES) -> pa.Table:
    """``table`` with record batches of at most ~``max_bytes`` each (zero-copy re-chunking)."""
    if table.num_rows == 0 or table.nbytes <= max_bytes:
        return table
    rows_per_batch = max(1, int(table.num_rows * max_bytes // max(table.nbytes, 1)))
    return pa.Table.from_batches(table.to_batches(max_chunksize=rows_per_batch), schema=table.schema)


def destination_parts(table: pa.Table, dest: np.ndarray, num_parts: int) -> Callable[[int], pa.Table]:
    """A function giving part i of ``table``: the rows with ``dest == i``, in their relative order.

    Parts are built on demand, so an exchange can serialise and drop one before the next
    exists. Up to :data:`FILTER_MAX_PARTS` parts, each is one boolean filter of the table;
    beyond that one stable radix argsort and one ``take`` reorder the table once, and the
    parts are zero-copy slices of that.
    """
    if num_parts == 1:
        return lambda d: table
    counts = np.bincount(dest, minlength=num_parts)
    if table.num_rows == 0 or int(counts.max()) == table.num_rows:
        # everything goes to one place: no reordering needed
        only = int(np.argmax(counts)) if table.num_rows else 0
        return lambda d: table if d == only else table.slice(0, 0)
    if num_parts <= FILTER_MAX_PARTS:
        # a few sequential filter passes beat one random-access take on few ranks
        return lambda d: bounded_batches(table.filter(pa.array(dest == d)))
    order = np.argsort(dest, kind="stable")  # radix sort for small integer ids
    ordered = table.take(pa.array(order))
    del order
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return lambda d: bounded_batches(ordered.slice(int(bounds[d]), int(counts[d])))


def split_by_destination(table: pa.Table, dest: np.ndarray, num_parts: int) -> list[pa.Table]:
    """Rows of ``table`` grouped by ``dest`` (one id per row): part i holds the rows with dest == i.

    Keeps the rows' relative order inside each part (stable sort of the ids).
    """
    part = destination_parts(table, dest, num_parts)
    return [part(d) for d in range(num_parts)]


def exchange_by_destination(
    table: pa.Table, dest: np.ndarray, comm: Communicator, what: str, num_parts: int | None = None
) -> pa.Table:
    """Send each row to rank ``dest[row]``; return the rows this rank receives, by source rank.

    ``num_parts`` > world size maps part b to rank ``b * P // num_parts`` (contiguous runs).
    Parts are cut one at a time and dropped once serialised (see :func:`exchange_parts`).
    """
    p = comm.size
    if p == 1:
        return table
    if num_parts is not None and num_parts != p:
        dest = (dest.astype(np.int64) * p // num_parts).astype(dest.dtype)
    received = exchange_parts(destination_parts(table, dest, p), comm, what)
    return concat_same_schema(received, table.schema)


def concat_same_schema(tables: Sequence[pa.Table], schema: pa.Schema) -> pa.Table:
    """Concatenate tables that share ``schema`` (zero-copy), dropping empty ones."""
    nonempty = [t for t in tables if t.num_rows]
    if not nonempty:
        return schema.empty_table()
    if len(nonempty) == 1:
        return nonempty[0]
    return pa.concat_tables(nonempty)


def hash_shuffle(
    table: pa.Table, on: Sequence[str], comm: Communicator, what: str = "shuffle", num_partitions: int | None = None
) -> pa.Table:
    """Rows with equal values in ``on`` end on the same rank (hash partitioning + one all-to-all)."""
    if comm.size == 1:
        return table
    parts = num_partitions or comm.size
    dest = partition_of(hash_rows(table, on), parts)
    return exchange_by_destination(table, dest, comm, what, num_parts=parts)
