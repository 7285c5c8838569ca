"""Moving Arrow tables between ranks: one all-to-all of IPC streams.

Every distributed operation that moves rows (hash shuffles, sorts, rebalancing, the
global shuffle, window halos, gathers) goes through :func:`exchange_tables` (or its lazy
form :func:`exchange_parts`), so the wire format and its copy accounting live in one place.

Memory: the IPC streams of all outgoing parts are written straight into *one* send buffer,
back to back, and each part is released as soon as it is written (when the caller handed
it over), so a rank never holds a part, its serialisation and a gathered send copy at
once. The MPI communicator sends that buffer as is and, in the usual single round,
returns views into its one receive buffer, so the received tables are read zero-copy.
Serialising is the one copy (counted under ``exchange``).
"""

from __future__ import annotations

from collections.abc import Callable, MutableSequence, Sequence

import numpy as np
import pyarrow as pa

from .comm.base import Communicator
from .copies import record_copy


def _write_stream(table: pa.Table, sink: pa.NativeFile) -> None:
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def ipc_size(table: pa.Table) -> int:
    """Bytes of the IPC stream :func:`table_to_bytes` writes for ``table`` (measured without copying data)."""
    sink = pa.MockOutputStream()
    _write_stream(table, sink)
    return int(sink.size())


def table_to_bytes(table: pa.Table) -> pa.Buffer:
    """One Arrow IPC stream holding ``table`` (schema included, also for 0 rows)."""
    sink = pa.BufferOutputStream()
    _write_stream(table, sink)
    return sink.getvalue()


def table_from_bytes(buf: bytes | memoryview | pa.Buffer) -> pa.Table:
    """Read a table written by :func:`table_to_bytes` without copying its buffers."""
    return pa.ipc.open_stream(pa.py_buffer(buf) if not isinstance(buf, pa.Buffer) else buf).read_all()


def exchange_parts(part_for: Callable[[int], pa.Table], comm: Communicator, what: str = "exchange") -> list[pa.Table]:
    """Send ``part_for(i)`` to rank i; return the tables received from every rank, by source.

    ``part_for`` is called once per rank: first for every other rank (those parts are
    serialised into the send buffer and dropped), then, after the all-to-all, for this
    rank's own part, which is never serialised. Building parts on demand keeps at most
    the outgoing parts, the send buffer and the received bytes alive, never the own part
    on top. Every part must have the same schema.
    """
    p, me = comm.size, comm.rank
    if p == 1:
        return [part_for(0)]
    outgoing: list[pa.Table | None] = [None if dst == me else part_for(dst) for dst in range(p)]
    sizes = [0 if t is None else ipc_size(t) for t in outgoing]
    # One send buffer with the streams back to back: the communicator can send it without
    # gathering, and its untouched pages cost no memory until each stream is written.
    send = np.empty(sum(sizes), dtype=np.uint8)
    views: list[bytes | memoryview] = []
    offset = 0
    for dst, size in enumerate(sizes):
        part = outgoing[dst]
        outgoing[dst] = None  # drop our reference: the part can go once it is written
        if part is None:
            views.append(b"")
            continue
        target = send.data[offset : offset + size]
        _write_stream(part, pa.FixedSizeBufferWriter(pa.py_buffer(target)))
        del part
        views.append(target)
        offset += size
    if offset:
        record_copy("exchange", offset, what)
    received = comm.alltoall_bytes(views)
    del views, send
    tables = [pa.table({}) if src == me else table_from_bytes(received[src]) for src in range(p)]
    del received
    tables[me] = part_for(me)
    return tables


def exchange_tables(
    parts: Sequence[pa.Table], comm: Communicator, what: str = "exchange", *, consume: bool = False
) -> list[pa.Table]:
    """Send ``parts[i]`` to rank i; return the tables received from every rank, by source.

    Every part must have the same schema. The part a rank keeps for itself is not
    serialised. With ``consume=True`` the caller hands the parts over: each entry of the
    (mutable) list is set to None once it has been serialised, so its memory can be freed
    before the exchange finishes; the caller must hold no other reference to the parts.
    """
    if len(parts) != comm.size:
        raise ValueError(f"{what}: need one part per rank ({comm.size}), got {len(parts)}")

    def part_for(dst: int) -> pa.Table:
        part = parts[dst]
        if consume:
            assert isinstance(parts, MutableSequence)
            parts[dst] = None  # type: ignore[call-overload]
        return part

    return exchange_parts(part_for, comm, what)
