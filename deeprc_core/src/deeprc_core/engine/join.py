"""Distributed join: hash-shuffle both sides on the keys, then a local Acero hash join.

Output naming follows pandas ``merge``: key pairs with the same name on both sides give
one column (coalesced, so right/outer joins show the right key where the left one is
missing); other columns present on both sides get ``suffixes``; the order is the left
columns, then the right ones. Null keys never match (Arrow's semantics; pandas would
match NaN with NaN): rows with a null key appear only in left/right/outer joins,
unmatched. Both engines produce these names (:func:`plan_join` is shared).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..comm.base import Communicator
from ..errors import SchemaError
from .dense_join import dense_join_indices
from .hashing import hash_rows
from .partition import hash_shuffle
from .select import as_list, missing_columns

JOIN_TYPES = {"inner": "inner", "left": "left outer", "right": "right outer", "outer": "full outer"}


@dataclass(frozen=True)
class OutputColumn:
    """One output column: its name and where it comes from (``left``/``right`` column or a coalesced key)."""

    name: str
    left: str | None
    right: str | None


@dataclass(frozen=True)
class JoinPlan:
    """What a join does: key columns of both sides, join type and the output columns in order."""

    left_on: tuple[str, ...]
    right_on: tuple[str, ...]
    how: str
    columns: tuple[OutputColumn, ...]


def plan_join(
    left: pa.Schema,
    right: pa.Schema,
    on: str | Sequence[str] | None = None,
    left_on: str | Sequence[str] | None = None,
    right_on: str | Sequence[str] | None = None,
    how: str = "inner",
    suffixes: tuple[str, str] = ("_x", "_y"),
) -> JoinPlan:
    """Validate a join's arguments against both schemas and name its output like pandas.

    Raises SchemaError / ValueError with a message naming the problem.
    """
    if how not in JOIN_TYPES:
        raise ValueError(f"join: how must be one of {sorted(JOIN_TYPES)}, not {how!r}")
    if on is not None and (left_on is not None or right_on is not None):
        raise ValueError("join: give either on= or left_on=/right_on=, not both")
    if on is not None:
        lk, rk = as_list(on), as_list(on)
    elif left_on is not None or right_on is not None:
        lk, rk = as_list(left_on), as_list(right_on)
    else:
        lk = rk = [c for c in left.names if c in right.names]
    if not lk or len(lk) != len(rk):
        raise ValueError(f"join: need the same, non-zero number of left and right keys, got {lk} and {rk}")
    missing_columns(left, lk, "join", "left")
    missing_columns(right, rk, "join", "right")
    for a, b in zip(lk, rk):
        ta, tb = left.field(a).type, right.field(b).type
        if ta != tb:
            raise SchemaError(f"join: key types differ: left {a!r} is {ta}, right {b!r} is {tb}; cast one side first")
    shared = {a for a, b in zip(lk, rk) if a == b}
    overlap = (set(left.names) & set(right.names)) - shared
    if overlap and suffixes[0] == suffixes[1]:
        raise ValueError(f"join: columns {sorted(overlap)} are on both sides; suffixes must differ, got {suffixes}")
    cols: list[OutputColumn] = []
    for c in left.names:
        if c in shared:
            cols.append(OutputColumn(c, c, c))
        else:
            cols.append(OutputColumn(c + suffixes[0] if c in overlap else c, c, None))
    for c in right.names:
        if c in shared:
            continue
        cols.append(OutputColumn(c + suffixes[1] if c in overlap else c, None, c))
    names = [c.name for c in cols]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"join: output would have duplicate column names {dup}; choose other suffixes")
    return JoinPlan(tuple(lk), tuple(rk), how, tuple(cols))


def _acero_payload_ok(t: pa.DataType) -> bool:
    """Whether Acero's hash join can carry a non-key column of this type."""
    return not (pa.types.is_nested(t) or isinstance(t, pa.ExtensionType) or pa.types.is_dictionary(t))


#: Target rows per side and bucket of a local join (Acero's hash join needs ~3-4x its inputs' bytes).
BUCKET_ROWS = 1 << 16
#: Most buckets a local join is cut into.
MAX_BUCKETS = 256


def num_buckets(rows: int) -> int:
    """How many hash buckets a local join of sides with up to ``rows`` rows is cut into."""
    return max(1, min(MAX_BUCKETS, -(-rows // BUCKET_ROWS)))


def bucketed(table: pa.Table, keys: Sequence[str], buckets: int) -> tuple[pa.Table, list[int]]:
    """``table`` reordered by hash bucket of ``keys`` (one stable radix argsort + one take) and the bucket bounds.

    The bucket comes from the hash's low 32 bits, independent of the rank (high bits), so
    a rank's rows spread over all buckets.
    """
    h = hash_rows(table, keys)
    h &= np.uint64(0xFFFFFFFF)
    h *= np.uint64(buckets)
    h >>= np.uint64(32)
    ids = h.astype(np.int16)
    del h
    counts = np.bincount(ids, minlength=buckets)
    order = np.argsort(ids, kind="stable")
    del ids
    out = table.take(pa.array(order))
    return out, [0, *(int(c) for c in np.cumsum(counts))]


#: Output rows of the dense join taken at a time (bounds the index arrays alive at once to ~4 MiB).
TAKE_ROWS = 1 << 18


def _dense_join(left: pa.Table, right: pa.Table, plan: JoinPlan) -> pa.Table | None:
    """The join by direct addressing on one dense integer key (:mod:`.dense_join`), or None where it does not apply."""
    if len(plan.left_on) != 1 or plan.how == "outer":
        return None
    lk, rk = left.column(plan.left_on[0]), right.column(plan.right_on[0])
    right_join = plan.how == "right"  # then probe the right side and keep its unmatched rows
    found = (
        dense_join_indices(rk, lk, keep_unmatched=True)
        if right_join
        else dense_join_indices(lk, rk, keep_unmatched=plan.how == "left")
    )
    if found is None:
        return None
    names = [c.name for c in plan.columns]

    def piece(probe_rows: list[pa.Array], build_rows: list[pa.Array]) -> pa.Table:
        probe, build = pa.chunked_array(probe_rows, pa.int64()), pa.chunked_array(build_rows, pa.int64())
        li, ri = (build, probe) if right_join else (probe, build)
        arrays = []
        for col in plan.columns:
            if col.left is not None and (col.right is None or not right_join):
                arrays.append(left.column(col.left).take(li))  # a shared key: the left one (equal where matched)
            else:
                assert col.right is not None
                arrays.append(right.column(col.right).take(ri))
        return pa.table(arrays, names=names)

    # the slices' indices are taken in groups of about TAKE_ROWS output rows: one take per column
    # per group (a take per 64K-row slice costs more), and the indices of one group alive at a time
    pieces: list[pa.Table] = []
    probe_rows: list[pa.Array] = []
    build_rows: list[pa.Array] = []
    pending = 0
    for p, b in found:
        probe_rows.append(pa.array(p))
        build_rows.append(b)
        pending += len(p)
        if pending >= TAKE_ROWS:
            pieces.append(piece(probe_rows, build_rows))
            probe_rows, build_rows, pending = [], [], 0
    if probe_rows or not pieces:
        pieces.append(piece(probe_rows, build_rows))
    return pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]


def local_join(left: pa.Table, right: pa.Table, plan: JoinPlan) -> pa.Table:
    """Join two local tables as ``plan`` says (Acero hash join; index join for unsupported payloads)."""
    return join_owned([left, right], plan)


def join_owned(sides: list[pa.Table], plan: JoinPlan) -> pa.Table:
    """:func:`local_join` of ``sides = [left, right]``, emptying the list as soon as the inputs are done with.

    The caller hands both tables over (and keeps no other reference), so their memory
    can be freed while the output is assembled (coalesced keys, payload takes).
    """
    left, right = sides
    sides.clear()
    dense = _dense_join(left, right, plan)
    if dense is not None:
        return dense
    buckets = num_buckets(max(left.num_rows, right.num_rows))
    lbounds, rbounds = [0, left.num_rows], [0, right.num_rows]
    if buckets > 1:  # each rebinding drops the unordered side (the caller handed it over)
        left, lbounds = bucketed(left, plan.left_on, buckets)
        right, rbounds = bucketed(right, plan.right_on, buckets)
    lnames = {c: f"l{i}" for i, c in enumerate(left.column_names)}
    rnames = {c: f"r{i}" for i, c in enumerate(right.column_names)}
    lkeys = [lnames[c] for c in plan.left_on]
    rkeys = [rnames[c] for c in plan.right_on]
    payload_ok = all(
        _acero_payload_ok(f.type)
        for t, keys in ((left, plan.left_on), (right, plan.right_on))
        for f in t.schema
        if f.name not in keys
    )
    if payload_ok:
        lt = left.rename_columns([lnames[c] for c in left.column_names])
        rt = right.rename_columns([rnames[c] for c in right.column_names])
    else:  # join keys + row numbers only, then take the payload columns
        lt = pa.table(
            [*(left.column(c) for c in plan.left_on), pa.array(np.arange(left.num_rows))], names=[*lkeys, "li"]
        )
        rt = pa.table(
            [*(right.column(c) for c in plan.right_on), pa.array(np.arange(right.num_rows))], names=[*rkeys, "ri"]
        )
    # bucket by bucket: equal keys share a bucket, so the union of the bucket joins is the join,
    # and Acero's hash table (several times its build side) only ever holds one bucket
    pieces = [
        lt.slice(lbounds[b], lbounds[b + 1] - lbounds[b]).join(
            rt.slice(rbounds[b], rbounds[b + 1] - rbounds[b]),
            keys=lkeys,
            right_keys=rkeys,
            join_type=JOIN_TYPES[plan.how],
            coalesce_keys=False,
        )
        for b in range(len(lbounds) - 1)
    ]
    del lt, rt
    joined = pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]
    del pieces
    if payload_ok:  # every output column is in ``joined``: the inputs can go before any coalescing
        del left, right
        payload: dict[str, pa.Table] = {}
    else:
        payload = {"l": left, "r": right}
        del left, right

    def get(side: str, name: str) -> pa.ChunkedArray:
        mapped = (lnames if side == "l" else rnames)[name]
        if payload_ok or mapped in (lkeys if side == "l" else rkeys):
            return joined.column(mapped)
        idx = joined.column("li" if side == "l" else "ri")
        return payload[side].column(name).take(idx)

    arrays = []
    for col in plan.columns:
        if col.left is not None and col.right is not None:
            a, b = get("l", col.left), get("r", col.right)
            arrays.append(a if plan.how in ("inner", "left") else pc.coalesce(a, b))
        elif col.left is not None:
            arrays.append(get("l", col.left))
        else:
            assert col.right is not None
            arrays.append(get("r", col.right))
    return pa.table(arrays, names=[c.name for c in plan.columns])


def arrow_join(left: pa.Table, right: pa.Table, plan: JoinPlan, comm: Communicator) -> pa.Table:
    """The built-in engine's distributed join of this rank's partitions (collective).

    One side at a time: the left side is shuffled (its parts cut, sent and dropped one by
    one) before the right side's parts exist, and the shuffled sides are handed to
    :func:`join_owned`, which frees them as soon as Acero is done with them.
    """
    sides = [hash_shuffle(left, plan.left_on, comm, "join (left side)")]
    sides.append(hash_shuffle(right, plan.right_on, comm, "join (right side)"))
    return join_owned(sides, plan)
