"""The engines behind GlobalTable's distributed operations, one interface each: an operation is dispatched once.

An engine runs every operation on this rank's partition(s) and the communicator
(collectively with the other ranks). An engine that cannot run an operation on a given
input (a column type it cannot split, an aggregation it lacks) returns None, on every
rank alike, and the built-in Arrow engine runs it instead; the reason is logged once
(:func:`deeprc_core.engine.cylon.fallback`). Adding an engine is one class here, its
name in :data:`ENGINES`, and its choice in :func:`~deeprc_core.engine.select.choose_engine`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import pyarrow as pa

from ..comm.base import Communicator
from .dedupe import arrow_drop_duplicates
from .groupby import AggSpec, arrow_groupby
from .join import JoinPlan, arrow_join
from .partition import hash_shuffle
from .samplesort import sample_sort
from .select import choose_engine


class Engine(Protocol):
    """The operations an engine provides (each collective; None: "not on this input", Arrow runs it)."""

    name: str

    def shuffle(
        self, table: pa.Table, on: Sequence[str], comm: Communicator, num_partitions: int | None
    ) -> pa.Table | None:
        """Hash-partition rows by ``on``."""
        ...

    def join(self, left: pa.Table, right: pa.Table, plan: JoinPlan, comm: Communicator) -> pa.Table | None:
        """The join ``plan`` describes."""
        ...

    def sort(
        self, table: pa.Table, by: Sequence[str], ascending: bool | Sequence[bool], comm: Communicator, row_offset: int
    ) -> pa.Table | None:
        """Globally sorted, stable and balanced rows."""
        ...

    def groupby(
        self, table: pa.Table, by: Sequence[str], aggs: Sequence[AggSpec], comm: Communicator
    ) -> pa.Table | None:
        """One row per group with the aggregations."""
        ...

    def drop_duplicates(
        self, table: pa.Table, subset: Sequence[str], comm: Communicator, row_offset: int
    ) -> pa.Table | None:
        """The first row of each distinct ``subset`` value in global order."""
        ...


class ArrowEngine:
    """The built-in engine: Arrow kernels per rank, Deep RC's exchanges between ranks (runs everything)."""

    name = "arrow"

    def shuffle(self, table: pa.Table, on: Sequence[str], comm: Communicator, num_partitions: int | None) -> pa.Table:
        """Hash-partition rows by ``on`` (``num_partitions`` buckets mapped to ranks in runs)."""
        return hash_shuffle(table, on, comm, "shuffle", num_partitions)

    def join(self, left: pa.Table, right: pa.Table, plan: JoinPlan, comm: Communicator) -> pa.Table:
        """Hash-shuffle both sides, then a local join (direct addressing or Acero)."""
        return arrow_join(left, right, plan, comm)

    def sort(
        self, table: pa.Table, by: Sequence[str], ascending: bool | Sequence[bool], comm: Communicator, row_offset: int
    ) -> pa.Table:
        """Sample sort with regular sampling."""
        return sample_sort(table, by, ascending, comm)

    def groupby(self, table: pa.Table, by: Sequence[str], aggs: Sequence[AggSpec], comm: Communicator) -> pa.Table:
        """Partial aggregates per rank, shuffled by key, combined."""
        return arrow_groupby(table, by, aggs, comm)

    def drop_duplicates(self, table: pa.Table, subset: Sequence[str], comm: Communicator, row_offset: int) -> pa.Table:
        """Rows tagged with their global number, shuffled by key, the first kept."""
        return arrow_drop_duplicates(table, subset, comm, row_offset)


class CylonEngine:
    """pycylon's distributed operations through the adapter of :mod:`deeprc_core.engine.cylon` (imported on use)."""

    name = "cylon"

    def shuffle(
        self, table: pa.Table, on: Sequence[str], comm: Communicator, num_partitions: int | None
    ) -> pa.Table | None:
        """Cylon's hash shuffle (one partition per rank only)."""
        if num_partitions not in (None, comm.size):
            return None
        from .cylon import cylon_shuffle

        return cylon_shuffle(table, on, comm)

    def join(self, left: pa.Table, right: pa.Table, plan: JoinPlan, comm: Communicator) -> pa.Table | None:
        """Cylon's distributed sort join."""
        from .cylon import cylon_join

        return cylon_join(left, right, plan, comm)

    def sort(
        self, table: pa.Table, by: Sequence[str], ascending: bool | Sequence[bool], comm: Communicator, row_offset: int
    ) -> pa.Table | None:
        """Cylon's distributed sort, with Deep RC's tie order restored."""
        from .cylon import cylon_sort

        return cylon_sort(table, by, ascending, comm, row_offset)

    def groupby(
        self, table: pa.Table, by: Sequence[str], aggs: Sequence[AggSpec], comm: Communicator
    ) -> pa.Table | None:
        """Cylon's distributed hash group-by."""
        from .cylon import cylon_groupby

        return cylon_groupby(table, by, aggs, comm)

    def drop_duplicates(
        self, table: pa.Table, subset: Sequence[str], comm: Communicator, row_offset: int
    ) -> pa.Table | None:
        """Cylon's shuffle, then the first row per key locally."""
        from .cylon import cylon_drop_duplicates

        return cylon_drop_duplicates(table, subset, comm, row_offset)


ARROW = ArrowEngine()
#: The engines by the name :func:`~deeprc_core.engine.select.choose_engine` returns.
ENGINES: dict[str, Engine] = {"arrow": ARROW, "cylon": CylonEngine()}


def dispatch(op: str, requested: str, comm: Communicator, call: Callable[[Engine], pa.Table | None]) -> pa.Table:
    """Run ``call`` on the engine chosen for ``op`` (``requested``: auto, cylon or arrow); Arrow if it declines."""
    out = call(ENGINES[choose_engine(requested, comm, op)])
    if out is None:
        out = call(ARROW)
    assert out is not None  # the Arrow engine runs every operation
    return out
