"""The few pyarrow calls whose spelling changed between pyarrow 10 and today.

The core supports pyarrow >= 10 (CI runs the engine tests on 10.0.1 and on the newest
release), so every version-dependent call the engine makes goes through here.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa


def is_view_type(t: pa.DataType) -> bool:
    """Whether ``t`` is a string/binary *view* type (these types only exist in pyarrow >= 16)."""
    checks = (getattr(pa.types, "is_string_view", None), getattr(pa.types, "is_binary_view", None))
    return any(check is not None and check(t) for check in checks)


def is_string_view(t: pa.DataType) -> bool:
    """Whether ``t`` is ``string_view`` (False on pyarrow versions without view types)."""
    check = getattr(pa.types, "is_string_view", None)
    return check is not None and check(t)


def group_by(table: pa.Table, keys: Sequence[str]) -> pa.TableGroupBy:
    """``table.group_by(keys)``, single-threaded where pyarrow lets us ask (>= 12; older ones take no options).

    Single-threaded grouping gives groups in first-seen order; the engine never relies on
    it, and older pyarrow simply groups with its default. Dictionary columns whose chunks
    carry different dictionaries (e.g. gathered from several ranks) are unified first:
    pyarrow < 13 refuses to group them ("Unifying differing dictionaries").
    """
    if any(pa.types.is_dictionary(f.type) for f in table.schema):
        table = table.unify_dictionaries()
    try:
        return table.group_by(list(keys), use_threads=False)
    except TypeError:  # pyarrow < 12: no keyword arguments
        return table.group_by(list(keys))


def drop_column(table: pa.Table, name: str) -> pa.Table:
    """``table`` without column ``name`` (``Table.drop_columns`` is pyarrow >= 12; ``select`` works everywhere)."""
    return table.select([c for c in table.column_names if c != name])
