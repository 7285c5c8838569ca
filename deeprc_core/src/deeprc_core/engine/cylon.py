"""Adapter to pycylon (Cylon's Python API), used only when pycylon is importable."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..comm.base import Communicator
from .compat import is_view_type
from .groupby import AggSpec
from .join import JoinPlan

logger = logging.getLogger("deeprc.engine")

PYCYLON_HINT = (
    "pycylon is not installed. It is not on PyPI: install it with conda "
    "('conda install -c cylondata pycylon') or build it from source "
    "(https://github.com/cylondata/cylon); Deep RC then uses it automatically."
)


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


# ---------------------------------------------------------------- the Cylon engine
# pycylon's distributed operators, called on this rank's partition. Every function returns
# the result partition as a pyarrow.Table, or None after logging why the Arrow engine must
# run instead (a type Cylon rejects, null keys whose matching semantics differ, ...). The
# decision depends only on the schema and on globally agreed facts, so all ranks decide alike.


def cylon_rejects(t: pa.DataType) -> bool:
    """Whether pycylon cannot take a column of type ``t`` (dictionaries are decoded instead)."""
    return (
        pa.types.is_decimal(t)
        or pa.types.is_nested(t)
        or pa.types.is_fixed_size_binary(t)
        or is_view_type(t)
        or isinstance(t, pa.ExtensionType)
    )


def prepare_for_cylon(table: pa.Table) -> tuple[pa.Table | None, str]:
    """``table`` in types Cylon accepts (dictionary columns decoded), or None and the reason."""
    bad = [f"{f.name} ({f.type})" for f in table.schema if not pa.types.is_dictionary(f.type) and cylon_rejects(f.type)]
    bad += [
        f"{f.name} ({f.type})"
        for f in table.schema
        if pa.types.is_dictionary(f.type) and cylon_rejects(f.type.value_type)
    ]
    if bad:
        return None, f"Cylon cannot take column(s) {', '.join(bad)}"
    if any(pa.types.is_dictionary(f.type) for f in table.schema):
        cols = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in table.columns]
        table = pa.table(cols, names=table.column_names)
    return table, ""


def fallback(what: str, reason: str) -> None:
    """Log that ``what`` runs on the Arrow engine instead of Cylon, and why."""
    logger.info("%s: using the arrow engine instead of Cylon: %s", what, reason)


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


def cylon_join(
    left: pa.Table, right: pa.Table, plan: JoinPlan, comm: Communicator, any_null_keys: bool
) -> pa.Table | None:
    """Distributed join through ``DataFrame.merge(..., env=env)``; None to fall back."""
    if any_null_keys:
        fallback("join", "null keys: Cylon's null matching differs from Arrow's (nulls never match)")
        return None
    lt, why = prepare_for_cylon(left)
    rt, why_r = prepare_for_cylon(right)
    if lt is None or rt is None:
        fallback("join", why or why_r)
        return None
    env = cylon_env(comm)
    out = _frame(lt, env).merge(
        _frame(rt, env),
        how=plan.how,
        algorithm="hash",
        left_on=list(plan.left_on),
        right_on=list(plan.right_on),
        env=env,
    )
    return normalise_cylon_join(out.to_arrow(), lt.column_names, rt.column_names, plan)


def cylon_sort(
    table: pa.Table, by: Sequence[str], ascending: bool | Sequence[bool], comm: Communicator
) -> pa.Table | None:
    """Distributed sort through ``DataFrame.sort_values(..., env=env)``; None to fall back."""
    prepared, why = prepare_for_cylon(table)
    if prepared is None:
        fallback("sort", why)
        return None
    env = cylon_env(comm)
    flags = ascending if isinstance(ascending, bool) else list(ascending)
    out = _frame(prepared, env).sort_values(by=list(by), ascending=flags, env=env)
    return rename_positionally(out.to_arrow(), prepared.column_names)


#: Aggregations whose Cylon semantics match ours (Cylon's std/var ddof differs between versions).
CYLON_AGGS = ("sum", "min", "max", "count", "mean")


def cylon_groupby(table: pa.Table, by: Sequence[str], aggs: Sequence[AggSpec], comm: Communicator) -> pa.Table | None:
    """Distributed group-by through ``DataFrame.groupby(by, env=env).agg(...)``; None to fall back."""
    if any(a.func not in CYLON_AGGS for a in aggs):
        fallback("groupby", f"only {CYLON_AGGS} are delegated to Cylon")
        return None
    if len({a.column for a in aggs}) != len(aggs):
        fallback("groupby", "several aggregations of one column")
        return None
    prepared, why = prepare_for_cylon(table.select(list(dict.fromkeys([*by, *(a.column for a in aggs)]))))
    if prepared is None:
        fallback("groupby", why)
        return None
    env = cylon_env(comm)
    out = _frame(prepared, env).groupby(list(by), env=env).agg({a.column: a.func for a in aggs})
    # Cylon: keys, then one column per aggregation in the dict's order, named e.g. "sum_x"
    return rename_positionally(out.to_arrow(), [*by, *(a.name for a in aggs)])


def cylon_drop_duplicates(table: pa.Table, subset: Sequence[str], comm: Communicator) -> pa.Table | None:
    """Distributed drop_duplicates through ``DataFrame.drop_duplicates(..., env=env)``; None to fall back."""
    prepared, why = prepare_for_cylon(table)
    if prepared is None:
        fallback("drop_duplicates", why)
        return None
    env = cylon_env(comm)
    out = _frame(prepared, env).drop_duplicates(subset=list(subset), keep="first", env=env)
    return rename_positionally(out.to_arrow(), prepared.column_names)


def cylon_shuffle(table: pa.Table, on: Sequence[str], comm: Communicator) -> pa.Table | None:
    """Hash shuffle through ``pycylon.Table.shuffle``; None to fall back."""
    prepared, why = prepare_for_cylon(table)
    if prepared is None:
        fallback("shuffle", why)
        return None
    import pycylon

    env = cylon_env(comm)
    out = pycylon.Table.from_arrow(env.context, prepared).shuffle(list(on))
    return rename_positionally(out.to_arrow(), prepared.column_names)
