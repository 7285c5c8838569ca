"""The distributed operations of :class:`~deeprc_core.GlobalTable` (collective methods).

GlobalTable inherits them from :class:`EngineOps`; each checks its arguments on every
rank, then dispatches once to the engine chosen by ``engine="auto"|"cylon"|"arrow"``
(:func:`deeprc_core.engine.engines.dispatch`; the engines are in that module).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Generic, Protocol, TypeVar

import numpy as np
import pyarrow as pa

from ..comm.base import Communicator
from ..errors import SchemaError
from ..exchange import exchange_tables
from .dedupe import concat_local
from .engines import dispatch
from .groupby import AggSpec, check_aggs, parse_aggs
from .join import plan_join
from .samplesort import sort_keys
from .select import as_list, missing_columns, validate_everywhere


class PartitionedTable(Protocol):
    """What the operations need of a table (GlobalTable has it): its partition, ranks and a constructor.

    Typed against this protocol rather than GlobalTable, so that the engine never imports
    the table module that mixes it in (no table <-> engine/ops circle).
    """

    @property
    def local(self) -> pa.Table:
        """This rank's Arrow partition."""
        ...

    @property
    def comm(self) -> Communicator:
        """The job's communicator."""
        ...

    @property
    def rank(self) -> int:
        """This rank."""
        ...

    @property
    def world_size(self) -> int:
        """The number of ranks."""
        ...

    @property
    def local_num_rows(self) -> int:
        """Rows on this rank."""
        ...

    @property
    def num_rows(self) -> int:
        """Rows on all ranks."""
        ...

    @property
    def row_offset(self) -> int:
        """The global index of this rank's first row."""
        ...

    @property
    def row_counts(self) -> tuple[int, ...]:
        """Rows on every rank, in rank order."""
        ...

    def _like(self: T, local: pa.Table) -> T: ...


#: the table type an operation is called on, and returns
T = TypeVar("T", bound=PartitionedTable)


class GroupBy(Generic[T]):
    """A pending distributed group-by: ``table.groupby(by).agg({...})`` runs it (collective)."""

    def __init__(self, table: T, by: list[str], engine: str) -> None:
        self._table, self._by, self._engine = table, by, engine

    def agg(self, spec: Mapping[str, str | Sequence[str]]) -> T:
        """Aggregate: ``{"col": "sum"}`` or ``{"col": ["mean", "std"]}``; output ``<col>_<agg>`` columns.

        Functions: sum, mean, min, max, count (non-null values), std (ddof=1). The result
        holds the key columns first, one row per group, spread over the ranks by key hash.
        """
        t, by = self._table, self._by
        aggs: list[AggSpec] = []

        def check() -> None:
            aggs.extend(parse_aggs(spec))
            if not by:
                raise ValueError("groupby needs at least one key column")
            check_aggs(t.local.schema, by, aggs)

        validate_everywhere(t.comm, "groupby", check)
        return t._like(dispatch("groupby", self._engine, t.comm, lambda e: e.groupby(t.local, by, aggs, t.comm)))


class EngineOps:
    """Collective data-engineering methods mixed into GlobalTable."""

    # ------------------------------------------------------------- shuffle
    def shuffle(self: T, on: str | Sequence[str], num_partitions: int | None = None, engine: str = "auto") -> T:
        """Hash-partition rows by ``on`` so that equal keys land on the same rank (collective).

        The hash is deterministic across processes and runs (see ``engine/hashing.py``);
        nulls hash alike. ``num_partitions`` (default: the world size) hash buckets are
        mapped to ranks in contiguous runs, so equal keys still meet on one rank.
        """
        keys = as_list(on)

        def check() -> None:
            if not keys:
                raise ValueError("shuffle needs at least one key column")
            if num_partitions is not None and num_partitions < 1:
                raise ValueError(f"shuffle: num_partitions must be positive, got {num_partitions}")
            missing_columns(self.local.schema, keys, "shuffle")

        validate_everywhere(self.comm, "shuffle", check)
        return self._like(
            dispatch("shuffle", engine, self.comm, lambda e: e.shuffle(self.local, keys, self.comm, num_partitions))
        )

    # ---------------------------------------------------------------- join
    def join(
        self: T,
        other: T,
        on: str | Sequence[str] | None = None,
        left_on: str | Sequence[str] | None = None,
        right_on: str | Sequence[str] | None = None,
        how: str = "inner",
        suffixes: tuple[str, str] = ("_x", "_y"),
        engine: str = "auto",
    ) -> T:
        """Distributed database-style join with ``other`` (collective), named like pandas ``merge``.

        ``how``: inner, left, right or outer. With ``on=`` (or equal key names) the key
        appears once; other columns on both sides get ``suffixes``. Null keys never match
        (Arrow's semantics). Row order is unspecified; rows end on the rank their key hashes to.
        """
        plans = []

        def check() -> None:
            if other.comm is not self.comm and (other.comm.size, other.comm.rank) != (self.comm.size, self.comm.rank):
                raise ValueError("join: both tables must live on the same ranks")
            plans.append(
                plan_join(self.local.schema, other.local.schema, on, left_on, right_on, how, (suffixes[0], suffixes[1]))
            )

        validate_everywhere(self.comm, "join", check)
        plan = plans[0]
        return self._like(
            dispatch("join", engine, self.comm, lambda e: e.join(self.local, other.local, plan, self.comm))
        )

    # ---------------------------------------------------------------- sort
    def sort(self: T, by: str | Sequence[str], ascending: bool | Sequence[bool] = True, engine: str = "auto") -> T:
        """Globally sorted rows: rank 0 holds the smallest keys, each rank's rows in order (collective).

        Sample sort with regular sampling; stable (equal keys keep their global input
        order) and balanced (ties are split between ranks too). ``ascending`` is one flag
        or one per column. Nulls go last (after NaNs), whatever the direction.
        """
        keys = as_list(by)

        def check() -> None:
            if not keys:
                raise ValueError("sort needs at least one key column")
            missing_columns(self.local.schema, keys, "sort")
            sort_keys(keys, ascending)

        validate_everywhere(self.comm, "sort", check)
        return self._like(
            dispatch(
                "sort", engine, self.comm, lambda e: e.sort(self.local, keys, ascending, self.comm, self.row_offset)
            )
        )

    # ------------------------------------------------------------- groupby
    def groupby(self: T, by: str | Sequence[str], engine: str = "auto") -> GroupBy[T]:
        """Start a distributed group-by on ``by``; call ``.agg({...})`` on the result."""
        return GroupBy(self, as_list(by), engine)

    # ------------------------------------------------------ drop_duplicates
    def drop_duplicates(self: T, subset: str | Sequence[str] | None = None, engine: str = "auto") -> T:
        """Rows with distinct ``subset`` values (default: all columns), keeping the first in global order.

        Collective; the kept rows end on the rank their key hashes to, in global row order.
        Nulls count as equal to each other.
        """
        keys = as_list(subset) or list(self.local.column_names)

        def check() -> None:
            missing_columns(self.local.schema, keys, "drop_duplicates")

        validate_everywhere(self.comm, "drop_duplicates", check)
        return self._like(
            dispatch(
                "drop_duplicates",
                engine,
                self.comm,
                lambda e: e.drop_duplicates(self.local, keys, self.comm, self.row_offset),
            )
        )

    # -------------------------------------------------------------- concat
    @classmethod
    def concat(cls, tables: Sequence[T]) -> T:
        """Global union of tables with equal schemas: each rank concatenates its partitions (no exchange)."""
        tables = list(tables)
        if not tables:
            raise ValueError("concat needs at least one table")
        first = tables[0]
        for i, t in enumerate(tables[1:], 1):
            if t.comm.size != first.comm.size:
                raise ValueError(f"concat: table {i} lives on {t.comm.size} ranks, table 0 on {first.comm.size}")
            if not t.local.schema.equals(first.local.schema):
                raise SchemaError(f"concat: table {i} has schema {t.local.schema}, table 0 has {first.local.schema}")
        return first._like(concat_local([t.local for t in tables]))

    # ----------------------------------------------------------- rebalance
    def rebalance(self: T, bounds: Sequence[int] | None = None) -> T:
        """Equal row counts (differing by at most one), keeping the global row order (collective).

        ``bounds`` (``world_size + 1`` increasing global row numbers from 0 to ``num_rows``)
        gives rank ``r`` the rows ``bounds[r]:bounds[r+1]`` instead, e.g. equal numbers of
        window starts (:func:`deeprc_core.windows.window_bounds`).
        """
        n, p, me = self.num_rows, self.world_size, self.rank
        if bounds is None:
            bounds = [n * r // p for r in range(p + 1)]
        if len(bounds) != p + 1 or bounds[0] != 0 or bounds[-1] != n or list(bounds) != sorted(bounds):
            raise ValueError(f"rebalance bounds {list(bounds)} must be {p + 1} increasing row numbers from 0 to {n}")
        out_bounds = np.asarray(bounds, dtype=np.int64)
        lo = self.row_offset
        hi = lo + self.local_num_rows
        parts = []
        for dst in range(p):
            a, b = max(lo, out_bounds[dst]), min(hi, out_bounds[dst + 1])
            parts.append(self.local.slice(int(a - lo), int(max(b - a, 0))))
        if all(parts[d].num_rows == 0 for d in range(p) if d != me) and self.row_counts == tuple(
            int(out_bounds[r + 1] - out_bounds[r]) for r in range(p)
        ):
            return self._like(self.local)
        received = exchange_tables(parts, self.comm, "rebalance")
        return self._like(pa.concat_tables(received))
