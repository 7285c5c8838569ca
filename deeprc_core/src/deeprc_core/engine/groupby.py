"""Distributed group-by: local partial aggregates, a hash shuffle of the partials, a combine.

Each rank aggregates its own rows into partials (``pa.Table.group_by``, or a dense
array aggregation for one integer key in a compact range: :mod:`.int_keys`) (sum, count,
min, max, and count/mean/M2 for ``std``), hash-shuffles the partial rows on the group
keys (few rows: one per group and rank) and combines them with a second ``group_by``.

Output: the key columns, then one column per aggregation named ``<column>_<agg>``
(Arrow's convention, e.g. ``price_sum``), in the order asked. Null keys form one group
of their own (like pandas ``dropna=False``). ``sum``/``min``/``max`` of a group without
values are null (Arrow; pandas gives 0 for sum); ``count`` counts non-null values;
``mean`` is float64; ``std`` uses ``ddof=1`` like pandas and is null for groups with
fewer than two values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from ..comm.base import Communicator
from ..errors import SchemaError
from . import int_keys
from .compat import group_by
from .partition import hash_shuffle
from .select import missing_columns

AGGREGATIONS = ("sum", "mean", "min", "max", "count", "std")


@dataclass(frozen=True)
class AggSpec:
    """One requested aggregation: input column and function."""

    column: str
    func: str

    @property
    def name(self) -> str:
        """The output column name, ``<column>_<func>``."""
        return f"{self.column}_{self.func}"


def parse_aggs(spec: Mapping[str, str | Sequence[str]]) -> list[AggSpec]:
    """``{"col": "sum"}`` or ``{"col": ["sum", "std"]}`` as a list of AggSpec (validated)."""
    if not isinstance(spec, Mapping) or not spec:
        raise ValueError("agg needs a non-empty dict {column: aggregation or list of aggregations}")
    out = []
    for col, funcs in spec.items():
        for f in [funcs] if isinstance(funcs, str) else list(funcs):
            if f not in AGGREGATIONS:
                raise ValueError(f"agg: unknown aggregation {f!r} for column {col!r}; choose from {AGGREGATIONS}")
            out.append(AggSpec(col, f))
    return out


def check_aggs(schema: pa.Schema, by: Sequence[str], aggs: Sequence[AggSpec]) -> None:
    """Raise SchemaError for missing columns or non-numeric columns under sum/mean/std."""
    missing_columns(schema, list(by), "groupby")
    missing_columns(schema, [a.column for a in aggs], "groupby.agg")
    for a in aggs:
        t = schema.field(a.column).type
        if a.func in ("sum", "mean", "std") and not (
            pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
        ):
            raise SchemaError(f"groupby.agg: {a.func} needs a numeric column; {a.column!r} is {t}")
    names = [a.name for a in aggs]
    if len(set(names)) != len(names) or set(names) & set(by):
        raise ValueError(f"groupby.agg: output names {names} repeat or clash with the keys {list(by)}")


def _aggregate(table: pa.Table, by: Sequence[str], specs: Sequence[tuple]) -> pa.Table:
    """``group_by(by).aggregate(specs)``: densely for one integer key (:mod:`.int_keys`), else Arrow's hash."""
    dense = int_keys.aggregate(table, by, specs)
    return dense if dense is not None else group_by(table, by).aggregate(list(specs))


def _partial_aggs(aggs: Sequence[AggSpec]) -> list[tuple[str, str, str, pc.FunctionOptions | None]]:
    """(partial name, input column, Arrow hash function, options) of every partial needed, deduplicated.

    Moments for mean/std are taken over a float64 copy ``<col>|f`` of the column (like pandas).
    """
    out: dict[str, tuple[str, str, str, pc.FunctionOptions | None]] = {}
    for a in aggs:
        c = a.column
        if a.func in ("sum", "min", "max", "count"):
            out[f"{c}|{a.func}"] = (f"{c}|{a.func}", c, a.func, None)
        if a.func in ("mean", "std"):
            out[f"{c}|n"] = (f"{c}|n", f"{c}|f", "count", None)
            out[f"{c}|fsum"] = (f"{c}|fsum", f"{c}|f", "sum", None)
        if a.func == "std":
            out[f"{c}|var"] = (f"{c}|var", f"{c}|f", "variance", pc.VarianceOptions(ddof=0))
    return list(out.values())


def _partials(table: pa.Table, by: Sequence[str], aggs: Sequence[AggSpec]) -> pa.Table:
    """One row per local group: the keys, then the partial aggregates (``<col>|m2`` = n * variance)."""
    wanted = _partial_aggs(aggs)
    plain = [w[1] for w in wanted if not w[1].endswith("|f")]
    src = table.select(list(dict.fromkeys([*by, *plain])))
    for c in dict.fromkeys(a.column for a in aggs if a.func in ("mean", "std")):
        src = src.append_column(f"{c}|f", pc.cast(table.column(c), pa.float64()))
    specs = [(inp, func, opts) if opts is not None else (inp, func) for _, inp, func, opts in wanted]
    res = _aggregate(src, by, specs)
    arrays = [res.column(k) for k in by]
    names = list(by)
    for name, inp, func, _ in wanted:
        arr = res.column(f"{inp}_{func}")
        if func == "variance":
            c = name[: -len("|var")]
            arr = pc.multiply(arr, pc.cast(res.column(f"{c}|f_count"), pa.float64()))
            name = f"{c}|m2"
        arrays.append(arr)
        names.append(name)
    return pa.table(arrays, names=names)


def _combine(partials: pa.Table, by: Sequence[str], aggs: Sequence[AggSpec]) -> pa.Table:
    """Combine the partial rows of equal keys and compute the final aggregates.

    M2 of a group = sum of the partials' M2 + sum(n_i * mean_i^2) - n * mean^2 (Chan et al.).
    """
    src = partials
    specs: list[tuple[str, str]] = []
    for name in partials.column_names[len(by) :]:
        func = name.rsplit("|", 1)[1]
        specs.append((name, func if func in ("min", "max") else "sum"))
        if func == "m2":
            c = name[: -len("|m2")]
            n = pc.cast(partials.column(f"{c}|n"), pa.float64())
            s = partials.column(f"{c}|fsum")
            src = src.append_column(f"{c}|nmean2", pc.divide(pc.multiply(s, s), pc.max_element_wise(n, 1.0)))
            specs.append((f"{c}|nmean2", "sum"))
    res = _aggregate(src, by, specs)
    null_f64 = pa.scalar(None, pa.float64())
    out = [res.column(k) for k in by]
    for a in aggs:
        c = a.column
        if a.func in ("min", "max"):
            out.append(res.column(f"{c}|{a.func}_{a.func}"))
        elif a.func in ("sum", "count"):
            out.append(res.column(f"{c}|{a.func}_sum"))
        else:
            n = pc.cast(res.column(f"{c}|n_sum"), pa.float64())
            s = res.column(f"{c}|fsum_sum")
            if a.func == "mean":
                out.append(pc.if_else(pc.greater(n, 0.0), pc.divide(s, pc.max_element_wise(n, 1.0)), null_f64))
            else:
                between = pc.subtract(
                    res.column(f"{c}|nmean2_sum"), pc.divide(pc.multiply(s, s), pc.max_element_wise(n, 1.0))
                )
                m2 = pc.max_element_wise(pc.add(res.column(f"{c}|m2_sum"), between), 0.0)
                var = pc.divide(m2, pc.max_element_wise(pc.subtract(n, 1.0), 1.0))
                out.append(pc.if_else(pc.greater(n, 1.0), pc.sqrt(var), null_f64))
    return pa.table(out, names=[*by, *(a.name for a in aggs)])


def arrow_groupby_schema(schema: pa.Schema, by: Sequence[str], aggs: Sequence[AggSpec]) -> pa.Schema:
    """The schema :func:`arrow_groupby` returns for ``schema`` (computed locally on no rows)."""
    empty = schema.empty_table().select(list(dict.fromkeys([*by, *(a.column for a in aggs)])))
    return _combine(_partials(empty, by, aggs), by, aggs).schema


def arrow_groupby(table: pa.Table, by: Sequence[str], aggs: Sequence[AggSpec], comm: Communicator) -> pa.Table:
    """The built-in engine's distributed group-by aggregation (collective)."""
    partials = _partials(table, by, aggs)
    shuffled = hash_shuffle(partials, by, comm, "groupby")
    del partials
    return _combine(shuffled, by, aggs)
