"""Adapter to pycylon (Cylon's Python API), used only when pycylon is importable.

Every operator here is collective and returns this rank's result partition as a
pyarrow.Table in exactly the Arrow engine's contract (names, types, order, placement
rules), or None after logging why the Arrow engine must run instead. The decision to fall
back is taken from one allgathered preflight (row counts, null/NaN keys) and the schema,
so all ranks decide alike; a pycylon failure is raised on every rank.

What is delegated (proven equal to the Arrow engine by tests/core/test_engine_cylon.py on
a real pycylon, 2 ranks) and what falls back, with why, is listed in docs/engine.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..comm.base import Communicator, agree
from ..errors import DeepRCError
from .compat import drop_column
from .cylon_types import from_carriers, to_carriers, unsupported_columns
from .dedupe import arrow_drop_duplicates_local, free_name, with_row_ids
from .groupby import AggSpec, arrow_groupby_schema
from .join import JoinPlan
from .samplesort import OVERSAMPLE
from .select import PYCYLON_HINT

logger = logging.getLogger("deeprc.engine")


class CylonError(DeepRCError, RuntimeError):
    """pycylon failed inside an operation; raised on every rank (the others name the failed ones)."""


def import_pycylon() -> Any:
    """Import pycylon or raise ImportError saying how to get it."""
    try:
        import pycylon
    except ImportError as exc:
        raise ImportError(PYCYLON_HINT) from exc
    return pycylon


def communicator_for_env(env: Any) -> Communicator:
    """The MPI communicator matching a distributed CylonEnv (rank/size checked)."""
    from ..comm.mpi import MPICommunicator

    comm = MPICommunicator()
    check_env_matches(env, comm)
    return comm


def check_env_matches(env: Any, comm: Communicator) -> None:
    """Raise if ``env``'s rank/world size differ from the communicator's."""
    rank, size = int(env.rank), int(env.world_size)
    if (rank, size) != (comm.rank, comm.size):
        raise ValueError(
            f"CylonEnv is rank {rank} of {size} but the table's communicator is rank {comm.rank} of {comm.size}; "
            "build the CylonEnv from the same MPI communicator: CylonEnv(config=MPIConfig(comm), distributed=True)"
        )


_LOGGED: set[tuple[str, str]] = set()


def fallback(what: str, reason: str) -> None:
    """Log (once per operation and reason) that ``what`` runs on the Arrow engine instead of Cylon, and why."""
    if (what, reason) not in _LOGGED:
        _LOGGED.add((what, reason))
        logger.info("%s: using the arrow engine instead of Cylon: %s", what, reason)


def ran_on_cylon(what: str) -> None:
    """Record (at DEBUG, on logger ``deeprc.engine``) that ``what`` ran on Cylon."""
    logger.debug("%s: ran on Cylon", what)


_ENVS: dict[int, Any] = {}


def cylon_env(comm: Communicator) -> Any:
    """A distributed CylonEnv over the MPI communicator of ``comm`` (one per communicator)."""
    key = id(comm)
    if key not in _ENVS:
        from pycylon import CylonEnv
        from pycylon.net import MPIConfig

        mpi_comm = getattr(comm, "comm", None)
        try:
            config = MPIConfig(mpi_comm) if mpi_comm is not None else MPIConfig()
        except TypeError:  # older pycylon: MPIConfig() always uses MPI_COMM_WORLD
            config = MPIConfig()
        env = CylonEnv(config=config, distributed=True)
        check_env_matches(env, comm)
        _ENVS[key] = env
    return _ENVS[key]


def _frame(table: pa.Table, env: Any) -> Any:
    """A pycylon DataFrame over ``table`` (zero-copy) in the distributed context of ``env``."""
    import pycylon

    return pycylon.DataFrame(pycylon.Table.from_arrow(env.context, table))


def rename_positionally(table: pa.Table, names: Sequence[str]) -> pa.Table:
    """Give Cylon's output columns our names by position (Cylon prefixes them, e.g. ``lt-``/``rt-``)."""
    if table.num_columns != len(names):
        raise RuntimeError(f"pycylon returned {table.num_columns} columns {table.column_names}, expected {len(names)}")
    return table.rename_columns(list(names))


# ---------------------------------------------------------------- preflight and guard
@dataclass(frozen=True)
class Preflight:
    """Facts every rank agrees on before calling Cylon: per-input global rows and unsafe keys."""

    rows: tuple[tuple[int, ...], ...]  # rows[i][r]: rows of input i on rank r
    bad_keys: int  # unsafe key values (null, NaN, -0.0), all inputs and ranks together

    def empty_somewhere(self) -> bool:
        """Whether some input is empty on some rank (Cylon mishandles empty partitions)."""
        return any(n == 0 for per_rank in self.rows for n in per_rank)


def _bad_key_count(table: pa.Table, keys: Sequence[str], nulls: bool) -> int:
    """Key values whose Cylon semantics are not Arrow's: NaN and -0.0 (hashed by their bits), and nulls if ``nulls``."""
    n = 0
    for k in keys:
        col = table.column(k)
        if nulls:
            n += col.null_count
        if (pa.types.is_float32(col.type) or pa.types.is_float64(col.type)) and len(col):
            odd = pc.or_(pc.is_nan(col), pc.and_(pc.equal(col, 0.0), pc.less(pc.divide(1.0, col), 0.0)))
            n += int(pc.sum(odd.cast(pa.int64())).as_py() or 0)
    return n


def preflight(comm: Communicator, inputs: Sequence[tuple[pa.Table, Sequence[str]]], nulls: bool = True) -> Preflight:
    """One allgather of every input's row count and its unsafe key count (see :func:`_bad_key_count`)."""
    mine = [(t.num_rows, _bad_key_count(t, keys, nulls)) for t, keys in inputs]
    everyone = comm.allgather(mine)
    rows = tuple(tuple(per_rank[i][0] for per_rank in everyone) for i in range(len(inputs)))
    return Preflight(rows, sum(bad for per_rank in everyone for _, bad in per_rank))


def screen(what: str, pre: Preflight, schemas: Sequence[pa.Schema], null_keys_reason: str) -> bool:
    """Whether Cylon may run ``what``; logs the reason (once) when it may not. Same answer on every rank."""
    bad = [c for s in schemas for c in unsupported_columns(s)]
    if bad:
        fallback(what, f"Cylon cannot split column(s) of type {', '.join(dict.fromkeys(bad))}")
        return False
    if pre.bad_keys:
        fallback(what, null_keys_reason)
        return False
    if pre.empty_somewhere():
        fallback(what, "an input is empty on some rank (Cylon fails or returns garbage on empty partitions)")
        return False
    return True


def guarded(what: str, comm: Communicator, call: Callable[[], pa.Table]) -> pa.Table:
    """Run the Cylon ``call``; any failure on any rank is raised on every rank as CylonError."""
    out: pa.Table | None = None
    err: BaseException | None = None
    try:
        out = call()
    except Exception as exc:  # noqa: BLE001 - pycylon raises plain ValueError/RuntimeError with C++ messages
        err = CylonError(f"{what} on Cylon failed on rank {comm.rank}: {exc}; engine='arrow' avoids Cylon")
    agree(comm, err, f"{what} on Cylon")
    assert out is not None
    ran_on_cylon(what)
    return out


# ---------------------------------------------------------------- join
def normalise_cylon_join(
    raw: pa.Table, left_names: Sequence[str], right_names: Sequence[str], plan: JoinPlan
) -> pa.Table:
    """Cylon's join output (all left columns then all right columns, prefixed) in pandas naming.

    Columns are matched by position, whatever prefixes the pycylon version used; shared
    keys become one coalesced column and overlapping names get the plan's suffixes.
    """
    tagged = rename_positionally(raw, [f"l|{c}" for c in left_names] + [f"r|{c}" for c in right_names])
    arrays = []
    for col in plan.columns:
        if col.left is not None and col.right is not None:
            a, b = tagged.column(f"l|{col.left}"), tagged.column(f"r|{col.right}")
            arrays.append(a if plan.how in ("inner", "left") else pc.coalesce(a, b))
        elif col.left is not None:
            arrays.append(tagged.column(f"l|{col.left}"))
        else:
            arrays.append(tagged.column(f"r|{col.right}"))
    return pa.table(arrays, names=[c.name for c in plan.columns])


def cylon_join(left: pa.Table, right: pa.Table, plan: JoinPlan, comm: Communicator) -> pa.Table | None:
    """Distributed join through ``DataFrame.merge(..., env=env)``; None to fall back (collective)."""
    if len(plan.left_on) > 1 and plan.how in ("right", "outer"):
        fallback("join", "multi-column right/outer joins crash Cylon's sort join (segfault in build_final_table)")
        return None
    pre = preflight(comm, [(left, plan.left_on), (right, plan.right_on)])
    if not screen(
        "join",
        pre,
        [left.schema, right.schema],
        "null, NaN or -0.0 keys (Cylon matches nulls; in Arrow nulls never match)",
    ):
        return None
    lt, rt = to_carriers(left), to_carriers(right)

    def call() -> pa.Table:
        env = cylon_env(comm)
        out = _frame(lt, env).merge(
            _frame(rt, env),
            how=plan.how,
            algorithm="sort",
            left_on=list(plan.left_on),
            right_on=list(plan.right_on),
            env=env,
        )
        return normalise_cylon_join(out.to_arrow(), lt.column_names, rt.column_names, plan)

    joined = guarded("join", comm, call)
    types = {c.name: (left.schema.field(c.left) if c.left else right.schema.field(c.right)) for c in plan.columns}
    return from_carriers(joined, pa.schema([pa.field(n, f.type) for n, f in types.items()]))


# ---------------------------------------------------------------- sort
def cylon_sort(
    table: pa.Table, by: Sequence[str], ascending: bool | Sequence[bool], comm: Communicator, row_offset: int
) -> pa.Table | None:
    """Distributed sort through ``DataFrame.sort_values(..., env=env)``; None to fall back (collective).

    The global row number is added as a last, ascending key: every key becomes unique, so
    equal keys keep their global input order (stable) and Cylon's splitters can cut inside
    a run of equal keys (balanced), as the Arrow engine promises.
    """
    pre = preflight(comm, [(table, by)])
    if not screen("sort", pre, [table.schema], "null, NaN or -0.0 keys (Cylon's placement of them is not Arrow's)"):
        return None
    rid = free_name(table.column_names, "__deeprc_row")
    prepared = with_row_ids(to_carriers(table), row_offset, rid)
    flags = [bool(ascending)] * len(by) if isinstance(ascending, bool) else [bool(a) for a in ascending]

    def call() -> pa.Table:
        env = cylon_env(comm)
        frame = _frame(prepared, env)
        # regular sampling with the Arrow engine's oversampling (Cylon's default takes 2 samples per rank)
        out = frame.sort_values(by=[*by, rid], ascending=[*flags, True], env=env, num_samples=OVERSAMPLE)
        return rename_positionally(out.to_arrow(), prepared.column_names)

    return from_carriers(drop_column(guarded("sort", comm, call), rid), table.schema)


# ---------------------------------------------------------------- groupby
#: Deep RC aggregation -> pycylon's name for it (``std`` is left to the Arrow engine).
CYLON_AGGS: dict[str, str] = {"sum": "sum", "min": "min", "max": "max", "count": "cnt", "mean": "mean"}


def _agg_input_type(func: str, t: pa.DataType) -> pa.DataType:
    """The type a column of type ``t`` is cast to before Cylon aggregates it with ``func``.

    mean runs over a float64 copy like the Arrow engine; sum over the Arrow engine's
    64-bit result type, so narrow integer columns cannot overflow on Cylon alone.
    """
    if func == "mean":
        return pa.float64()
    if func == "sum":
        if pa.types.is_floating(t):
            return pa.float64()
        return pa.uint64() if pa.types.is_unsigned_integer(t) else pa.int64()
    return t


def cylon_groupby(table: pa.Table, by: Sequence[str], aggs: Sequence[AggSpec], comm: Communicator) -> pa.Table | None:
    """Distributed group-by through pycylon's ``Table.groupby``; None to fall back (collective)."""
    unsupported = [a for a in aggs if a.func not in CYLON_AGGS]
    if unsupported:
        fallback("groupby", f"{sorted({a.func for a in unsupported})} have no equal Cylon aggregation")
        return None
    numeric = [a for a in aggs if pa.types.is_integer(table.schema.field(a.column).type)]
    numeric += [a for a in aggs if pa.types.is_floating(table.schema.field(a.column).type)]
    if len(numeric) != len(aggs):
        fallback("groupby", "Cylon aggregates integer and float columns only")
        return None
    if any(
        pa.types.is_string(table.schema.field(k).type) or pa.types.is_binary(table.schema.field(k).type) for k in by
    ):
        # seen in the tier: a string-keyed group came back as two rows (9 groups for 8 keys)
        fallback("groupby", "string/binary keys (Cylon's distributed group-by split a group over two rows)")
        return None
    pre = preflight(comm, [(table, by)])
    keys = table.select(list(by))
    if not screen("groupby", pre, [keys.schema], "null, NaN or -0.0 keys (Cylon's grouping of them is not Arrow's)"):
        return None
    # One input column per (column, input type); several aggregations may share it.
    inputs: dict[tuple[str, str], str] = {}
    src = to_carriers(keys)
    requests: list[tuple[str, str]] = []  # (input column, pycylon aggregation), in output order
    for a in aggs:
        t = _agg_input_type(a.func, table.schema.field(a.column).type)
        name = inputs.get((a.column, str(t)))
        if name is None:
            name = free_name(src.column_names, f"{a.column}|{t}")
            inputs[(a.column, str(t))] = name
            col = table.column(a.column)
            src = src.append_column(name, col if col.type == t else col.cast(t))
        requests.append((name, CYLON_AGGS[a.func]))
    plan: dict[str, list[str]] = {}
    for name, op in requests:
        plan.setdefault(name, [])
        if op not in plan[name]:
            plan[name].append(op)
    cylon_order = [(name, op) for name, ops in plan.items() for op in ops]
    want = arrow_groupby_schema(table.schema, by, aggs)

    def call() -> pa.Table:
        import pycylon

        env = cylon_env(comm)  # Table.groupby is Cylon's DistributedHashGroupBy (shuffle + aggregate)
        out = pycylon.Table.from_arrow(env.context, src).groupby(list(by), plan).to_arrow()
        return rename_positionally(out, [*by, *(f"{n}/{op}" for n, op in cylon_order)])

    out = guarded("groupby", comm, call)
    cols = [out.column(k) for k in by]
    cols += [out.column(f"{n}/{op}").cast(want.field(a.name).type) for a, (n, op) in zip(aggs, requests)]
    return from_carriers(pa.table(cols, names=want.names), want)


# ---------------------------------------------------------------- drop_duplicates and shuffle
def _string_keys(table: pa.Table, keys: Sequence[str]) -> bool:
    """Whether a key is string/binary: the tier saw Cylon's shuffle send equal string keys to different ranks."""
    return any(
        pa.types.is_string(table.schema.field(k).type) or pa.types.is_binary(table.schema.field(k).type) for k in keys
    )


def _shuffle_call(what: str, prepared: pa.Table, on: Sequence[str], comm: Communicator) -> pa.Table:
    def call() -> pa.Table:
        import pycylon

        env = cylon_env(comm)
        out = pycylon.Table.from_arrow(env.context, prepared).shuffle(list(on))
        return rename_positionally(out.to_arrow(), prepared.column_names)

    return guarded(what, comm, call)


def cylon_drop_duplicates(
    table: pa.Table, subset: Sequence[str], comm: Communicator, row_offset: int
) -> pa.Table | None:
    """drop_duplicates keeping the first row in global order: Cylon's hash shuffle, then a local pass.

    Cylon's own distributed unique ignores ``keep=``, so only its shuffle is used: rows
    carry their global row number through it, and each rank keeps the smallest number per
    key, in global row order (the Arrow engine's contract). Nulls equal each other.
    """
    if _string_keys(table, subset):
        fallback("drop_duplicates", "string/binary keys (Cylon's shuffle split equal string keys over ranks)")
        return None
    pre = preflight(comm, [(table, subset)], nulls=False)  # Cylon's hash puts equal nulls together
    if not screen("drop_duplicates", pre, [table.schema], "NaN or -0.0 keys (Cylon hashes float bits)"):
        return None
    rid = free_name(table.column_names, "__deeprc_row")
    shuffled = _shuffle_call("drop_duplicates", with_row_ids(to_carriers(table), row_offset, rid), subset, comm)
    return from_carriers(arrow_drop_duplicates_local(shuffled, subset, rid), table.schema)


def cylon_shuffle(table: pa.Table, on: Sequence[str], comm: Communicator) -> pa.Table | None:
    """Hash shuffle through ``pycylon.Table.shuffle`` (Cylon's hash, not Deep RC's); None to fall back."""
    if _string_keys(table, on):
        fallback("shuffle", "string/binary keys (Cylon's shuffle split equal string keys over ranks)")
        return None
    pre = preflight(comm, [(table, on)], nulls=False)
    if not screen("shuffle", pre, [table.schema], "NaN or -0.0 keys (Cylon hashes float bits)"):
        return None
    return from_carriers(_shuffle_call("shuffle", to_carriers(table), on, comm), table.schema)
