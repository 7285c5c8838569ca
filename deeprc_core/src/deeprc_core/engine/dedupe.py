"""Distributed drop_duplicates and concat for the built-in engine."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..comm.base import Communicator
from .compat import drop_column, group_by
from .partition import hash_shuffle


def free_name(names: Sequence[str], base: str) -> str:
    """``base``, with underscores appended until it is none of ``names``."""
    name = base
    while name in names:
        name += "_"
    return name


def with_row_ids(table: pa.Table, row_offset: int, name: str) -> pa.Table:
    """``table`` plus an int64 column ``name`` holding each row's global row number."""
    return table.append_column(name, pa.array(np.arange(row_offset, row_offset + table.num_rows, dtype=np.int64)))


def arrow_drop_duplicates(table: pa.Table, subset: Sequence[str], comm: Communicator, row_offset: int) -> pa.Table:
    """Keep the first row (in global row order) of every distinct ``subset`` value (collective).

    Rows are tagged with their global row number, hash-shuffled on ``subset``, reduced to
    the smallest row number per key, and left in global row order on their new rank.
    Nulls compare equal to each other here (like pandas).
    """
    rid = free_name(table.column_names, "__deeprc_row")
    tagged = with_row_ids(table, row_offset, rid)
    shuffled = hash_shuffle(tagged, subset, comm, "drop_duplicates")
    del tagged
    return arrow_drop_duplicates_local(shuffled, subset, rid)


def arrow_drop_duplicates_local(shuffled: pa.Table, subset: Sequence[str], rid: str) -> pa.Table:
    """The local half of drop_duplicates: rows whose equal-``subset`` rows all live on this rank.

    Keeps the row with the smallest ``rid`` (global row number) per key, in ``rid`` order,
    and drops the ``rid`` column.
    """
    firsts = group_by(shuffled, subset).aggregate([(rid, "min")]).column(f"{rid}_min")
    kept = shuffled.filter(pc.is_in(shuffled.column(rid), value_set=firsts.combine_chunks()))
    if kept.num_rows > 1:
        kept = kept.take(pc.sort_indices(kept.column(rid)))
    return drop_column(kept, rid)


def concat_local(tables: Sequence[pa.Table]) -> pa.Table:
    """Concatenate partitions with equal schemas (zero-copy)."""
    return pa.concat_tables(list(tables))
