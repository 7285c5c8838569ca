"""Which Arrow types go through Cylon, how some are carried in a type Cylon can split, and back.

Cylon (commit 03e0338, the newest) splits a table across ranks only when every column,
key or not, is an integer, float32/64, string, binary, fixed-size binary, date,
timestamp or time column; any other column fails the distributed join, sort, shuffle
and unique with "splitter not implemented" (duration is refused earlier, when the table
is created). These types are carried through Cylon in an equivalent splittable type and
cast back afterwards, which preserves values, order and equality:

* bool -> uint8 (false < true, as in Arrow's sort);
* duration -> int64 (the tick count, same order and equality);
* dictionary -> its value type (decoded; re-encoded after).

Everything else makes the operation run on the Arrow engine instead: large_string and
large_binary (narrowing 64-bit offsets could overflow), float16 (pyarrow 10, which pycylon
links, cannot cast it), decimals, nested, null, interval, view and extension types.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc


def splittable(t: pa.DataType) -> bool:
    """Whether Cylon's splitter takes a column of type ``t`` as it is."""
    return (
        pa.types.is_integer(t)
        or pa.types.is_float32(t)
        or pa.types.is_float64(t)
        or pa.types.is_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_date(t)
        or pa.types.is_timestamp(t)
        or pa.types.is_time(t)
    )


def carrier(t: pa.DataType) -> pa.DataType | None:
    """The type a ``t`` column travels through Cylon in (``t`` itself if splittable); None if none fits."""
    if pa.types.is_dictionary(t):
        return carrier(t.value_type)
    if splittable(t):
        return t
    if pa.types.is_boolean(t):
        return pa.uint8()
    if pa.types.is_duration(t):
        return pa.int64()
    return None


def unsupported_columns(schema: pa.Schema, columns: list[str] | None = None) -> list[str]:
    """``name (type)`` of each column (of ``columns``, default all) that cannot go through Cylon."""
    names = schema.names if columns is None else columns
    return [f"{n} ({schema.field(n).type})" for n in names if carrier(schema.field(n).type) is None]


def to_carriers(table: pa.Table) -> pa.Table:
    """``table`` with every column in its carrier type (no-op, zero-copy, for splittable columns).

    Call :func:`unsupported_columns` first: a column without a carrier raises TypeError here.
    """
    if all(carrier(f.type) == f.type for f in table.schema):
        return table
    cols = []
    for f, col in zip(table.schema, table.columns):
        target = carrier(f.type)
        if target is None:
            raise TypeError(f"column {f.name} ({f.type}) cannot go through Cylon")
        if pa.types.is_dictionary(f.type):
            col = col.cast(f.type.value_type)
        cols.append(col if col.type == target else col.cast(target))
    return pa.table(cols, names=table.column_names)


def from_carriers(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast the columns of Cylon's output (named as in ``schema``) back to ``schema``'s types."""
    cols = []
    for name, col in zip(table.column_names, table.columns):
        want = schema.field(name).type if name in schema.names else col.type
        cols.append(col if col.type == want else restore(col, want))
    return pa.table(cols, names=table.column_names)


def restore(col: pa.ChunkedArray, want: pa.DataType) -> pa.ChunkedArray:
    """``col`` (a carrier-typed column) as type ``want``."""
    if pa.types.is_dictionary(want):
        values = restore(col, want.value_type) if col.type != want.value_type else col
        chunks = []
        for chunk in values.chunks:
            enc = pc.dictionary_encode(chunk)
            chunks.append(pa.DictionaryArray.from_arrays(enc.indices.cast(want.index_type), enc.dictionary))
        return pa.chunked_array(chunks, type=pa.dictionary(want.index_type, want.value_type, want.ordered))
    if pa.types.is_boolean(want):
        return pc.not_equal(col, pa.scalar(0, col.type))
    return col.cast(want)
