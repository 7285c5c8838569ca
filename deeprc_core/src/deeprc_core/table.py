"""GlobalTable: a distributed dataframe in Cylon's model.

Every rank holds one Apache Arrow partition (:attr:`GlobalTable.local`); the global table
is the partitions in rank order. Methods marked *collective* must be called on every
rank in the same order; local ones touch only this rank's partition.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .comm import Communicator, agree, get_communicator
from .copies import record_copy
from .engine.ops import EngineOps
from .errors import SchemaError
from .exchange import exchange_tables

if TYPE_CHECKING:
    import pandas as pd


def _schema_key(schema: pa.Schema) -> bytes:
    return bytes(schema.remove_metadata().serialize())


def check_columns(table: pa.Table | pa.Schema, columns: Sequence[str], what: str) -> None:
    """Raise SchemaError naming every column of ``columns`` that ``table`` lacks."""
    names = table.names if isinstance(table, pa.Schema) else table.column_names
    missing = [c for c in columns if c not in names]
    if missing:
        raise SchemaError(f"{what}: no column(s) {missing}; the table has {list(names)}")


class GlobalTable(EngineOps):
    """This rank's Arrow partition of a global table, plus the job's communicator."""

    def __init__(self, local: pa.Table, comm: Communicator | None = None, *, _checked: bool = False) -> None:
        if isinstance(local, pa.RecordBatch):
            local = pa.Table.from_batches([local])
        if not isinstance(local, pa.Table):
            raise TypeError(f"GlobalTable needs a pyarrow.Table for this rank's partition, got {type(local).__name__}")
        self.local: pa.Table = local
        self.comm: Communicator = get_communicator() if comm is None else comm
        if not _checked and self.comm.size > 1:
            self._check_schemas()

    # ------------------------------------------------------------------ basics
    def _check_schemas(self) -> None:
        keys = self.comm.allgather(_schema_key(self.local.schema))
        if len(set(keys)) > 1:
            schemas = [pa.ipc.read_schema(pa.py_buffer(k)) for k in keys]
            diff = [f"rank {r}: {s}" for r, s in enumerate(schemas) if _schema_key(s) != keys[0]]
            raise SchemaError(
                "the ranks' partitions have different schemas; every rank must hold the same "
                f"columns and types. Rank 0: {schemas[0]}; differing: " + " | ".join(diff)
            )

    def _like(self, local: pa.Table) -> GlobalTable:
        """A GlobalTable over a new partition with the same communicator (schemas agree by construction)."""
        return GlobalTable(local, self.comm, _checked=True)

    @property
    def rank(self) -> int:
        """This rank."""
        return self.comm.rank

    @property
    def world_size(self) -> int:
        """Number of ranks (partitions)."""
        return self.comm.size

    @property
    def schema(self) -> pa.Schema:
        """The schema every partition shares."""
        return self.local.schema

    @property
    def column_names(self) -> list[str]:
        """Column names."""
        return list(self.local.column_names)

    @property
    def local_num_rows(self) -> int:
        """Rows in this rank's partition."""
        return int(self.local.num_rows)

    @cached_property
    def row_counts(self) -> tuple[int, ...]:
        """Every rank's row count, in rank order (collective the first time, then cached)."""
        return tuple(int(n) for n in self.comm.allgather(self.local_num_rows))

    @property
    def num_rows(self) -> int:
        """Rows of the global table (collective the first time)."""
        return sum(self.row_counts)

    @property
    def row_offset(self) -> int:
        """Global index of this rank's first row (collective the first time)."""
        return sum(self.row_counts[: self.rank])

    def __len__(self) -> int:
        return self.num_rows

    def __repr__(self) -> str:
        return (
            f"GlobalTable(rank {self.rank} of {self.world_size}, {self.local_num_rows} local rows, "
            f"columns {self.column_names})"
        )

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_arrow(cls, table: pa.Table | pa.RecordBatch, comm: Communicator | None = None) -> GlobalTable:
        """Wrap this rank's partition (collective: checks that all ranks share one schema)."""
        return cls(table, comm)

    @classmethod
    def from_pandas(
        cls, df: pd.DataFrame, comm: Communicator | None = None, preserve_index: bool = False
    ) -> GlobalTable:
        """This rank's partition from a pandas DataFrame (converted by Arrow; a copy)."""
        table = pa.Table.from_pandas(df, preserve_index=preserve_index)
        record_copy("from-pandas", table.nbytes, "pandas DataFrame")
        return cls(table, comm)

    @classmethod
    def shard(cls, frame: pa.Table | pd.DataFrame, comm: Communicator | None = None) -> GlobalTable:
        """Split one whole frame that every rank holds alike over the ranks (collective).

        Rank ``r`` of ``P`` keeps rows ``[n*r//P, n*(r+1)//P)``: a zero-copy slice of an
        Arrow table (a pandas DataFrame is converted first, one copy counted as
        ``from-pandas``). Every rank must pass the same number of rows, or every rank
        raises. When each rank holds only its own part, use :meth:`from_arrow` or
        :meth:`from_pandas` instead (calling those with the whole frame on every rank
        would count every row ``P`` times).
        """
        comm = get_communicator() if comm is None else comm
        table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
        if table is not frame:
            record_copy("from-pandas", table.nbytes, "pandas DataFrame")
        counts = comm.allgather(table.num_rows)
        if len(set(counts)) != 1:
            raise ValueError(
                f"GlobalTable.shard: the ranks hold frames of {counts} rows; shard needs the same whole frame on "
                "every rank (use GlobalTable.from_arrow/from_pandas when each rank holds only its own part)"
            )
        n, p, r = table.num_rows, comm.size, comm.rank
        return cls(table.slice(n * r // p, n * (r + 1) // p - n * r // p), comm)

    @classmethod
    def from_pydict(cls, data: dict[str, Any], comm: Communicator | None = None) -> GlobalTable:
        """This rank's partition from a dict of columns."""
        return cls(pa.table(data), comm)

    @classmethod
    def from_cylon(cls, df_or_table: Any, env: Any) -> GlobalTable:
        """Zero-copy from a pycylon DataFrame or Table living in CylonEnv ``env``."""
        from .engine.cylon import communicator_for_env, import_pycylon

        import_pycylon()
        if not hasattr(df_or_table, "to_arrow"):
            raise TypeError(f"from_cylon needs a pycylon DataFrame or Table, got {type(df_or_table).__name__}")
        table = df_or_table.to_arrow()  # pycylon.DataFrame.to_arrow and pycylon.Table.to_arrow share buffers
        if not isinstance(table, pa.Table):
            raise TypeError(f"pycylon's to_arrow() returned {type(table).__name__}, not a pyarrow.Table")
        return cls(table, communicator_for_env(env))

    def to_cylon(self, env: Any) -> Any:
        """Zero-copy into a pycylon DataFrame in CylonEnv ``env`` (same ranks as this table).

        ``pycylon.Table.from_arrow(env.context, table)`` wraps the Arrow buffers; the
        DataFrame is bound to ``env``'s context, so distributed Cylon operations see it.
        """
        from .engine.cylon import check_env_matches, import_pycylon

        pycylon = import_pycylon()
        check_env_matches(env, self.comm)
        return pycylon.DataFrame(pycylon.Table.from_arrow(env.context, self.local))

    # ------------------------------------------------------------- local ops
    def select(self, columns: Sequence[str]) -> GlobalTable:
        """Only ``columns``, in that order (zero-copy; collective only in its error check)."""
        err = None
        try:
            check_columns(self.local, columns, "select")
        except SchemaError as exc:
            err = exc
        agree(self.comm, err, "select")
        return self._like(self.local.select(list(columns)))

    def filter(self, mask_or_expr: Any) -> GlobalTable:
        """Rows where the boolean mask / Arrow compute expression is true (local, no exchange).

        ``mask_or_expr`` is a boolean array of this partition's length, or an expression
        such as ``pc.field("OT") > 0``; rows keep their order. Row counts change, so
        :attr:`row_counts` of the result is gathered again when asked for.
        """
        if isinstance(mask_or_expr, pc.Expression):
            import pyarrow.dataset as ds

            # Table.filter(Expression) exists from pyarrow 11 on; a dataset scan is its equivalent on 10.
            return self._like(ds.dataset(self.local).to_table(filter=mask_or_expr))
        return self._like(self.local.filter(mask_or_expr))

    def with_column(self, name: str, value: Any) -> GlobalTable:
        """Add or replace a column from an Arrow array, a compute Expression or ``f(local_table)``."""
        if callable(value) and not isinstance(value, pc.Expression):
            value = value(self.local)
        if isinstance(value, pc.Expression):
            import pyarrow.dataset as ds

            value = ds.dataset(self.local).to_table(columns={name: value}).column(name)
        if not isinstance(value, (pa.Array, pa.ChunkedArray)):
            value = pa.array(value)
        if len(value) != self.local_num_rows:
            raise ValueError(
                f"with_column({name!r}): {len(value)} values for {self.local_num_rows} rows on rank {self.rank}"
            )
        if name in self.local.column_names:
            return self._like(self.local.set_column(self.local.column_names.index(name), name, value))
        return self._like(self.local.append_column(name, value))

    def map_local(self, fn: Callable[[pa.Table], pa.Table]) -> GlobalTable:
        """Apply ``fn`` to this rank's partition (collective: re-checks the schemas agree)."""
        return GlobalTable(fn(self.local), self.comm)

    def to_pandas(self) -> pd.DataFrame:
        """This rank's partition as pandas (a copy made by Arrow)."""
        return self.local.to_pandas()

    # ----------------------------------------------------- row ranges, splits
    def slice_rows(self, start: int, stop: int) -> GlobalTable:
        """Global rows [start, stop) in global order; each rank keeps its share (zero-copy)."""
        lo = self.row_offset
        a = min(max(start - lo, 0), self.local_num_rows)
        b = min(max(stop - lo, 0), self.local_num_rows)
        return self._like(self.local.slice(a, max(b - a, 0)))

    def split(
        self,
        fractions: Sequence[float] | None = None,
        *,
        boundaries: Sequence[int] | None = None,
        ordered: bool = True,
        seed: int = 0,
        overlap: int = 0,
    ) -> list[GlobalTable]:
        """Split into parts by global row order or at random (collective).

        ``fractions`` (summing to at most 1) give part sizes as shares of the global rows;
        ``boundaries`` give global cut points (``[8640, 11520, 14400]`` makes three parts:
        ``[0, 8640)``, ``[8640, 11520)``, ``[11520, 14400)``; rows after the last cut are
        left out). With ``ordered=False`` rows are assigned to parts by one seeded
        permutation of the global row ids, so the split does not depend on the number
        of ranks; rows keep their relative order inside each part.

        ``overlap`` (ordered splits only) starts every part after the first that many rows
        early, so windows of the next part may look back into the previous one (Informer's
        ETT split: ``boundaries=[8640, 11520, 14400], overlap=seq_len``).
        """
        n = self.num_rows
        if (fractions is None) == (boundaries is None):
            raise ValueError("split needs exactly one of fractions= or boundaries=")
        if fractions is not None:
            if any(f < 0 for f in fractions) or sum(fractions) > 1 + 1e-9:
                raise ValueError(f"split fractions {list(fractions)} must be non-negative and sum to at most 1")
            cuts = [round(n * c) for c in np.cumsum(fractions)]
        else:
            cuts = [int(b) for b in boundaries or []]
            if cuts != sorted(cuts) or (cuts and (cuts[0] < 0 or cuts[-1] > n)):
                raise ValueError(f"split boundaries {cuts} must be increasing within [0, {n}]")
        edges = [0, *cuts]
        if overlap < 0:
            raise ValueError(f"split overlap={overlap} must be non-negative")
        if ordered:
            return [
                self.slice_rows(max(a - overlap, 0) if i else a, b)
                for i, (a, b) in enumerate(zip(edges[:-1], edges[1:]))
            ]
        if overlap:
            raise ValueError("split overlap= needs ordered=True (a random split has no neighbouring rows)")
        perm_pos = np.empty(n, dtype=np.int64)
        perm_pos[np.random.default_rng(seed).permutation(n)] = np.arange(n)
        mine = perm_pos[self.row_offset : self.row_offset + self.local_num_rows]
        parts = []
        for a, b in zip(edges[:-1], edges[1:]):
            idx = np.flatnonzero((mine >= a) & (mine < b))
            parts.append(self._like(self.local.take(pa.array(idx))))
        return parts

    # ------------------------------------------------------- global statistics
    def _numeric(self, columns: Sequence[str], what: str) -> list[pa.ChunkedArray]:
        err: Exception | None = None
        cols: list[pa.ChunkedArray] = []
        try:
            check_columns(self.local, columns, what)
            for c in columns:
                col = self.local.column(c)
                if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
                    raise SchemaError(f"{what}: column {c!r} is {col.type}, not numeric")
                cols.append(col)
        except SchemaError as exc:
            err = exc
        agree(self.comm, err, what)
        return cols

    def global_mean_std(self, columns: Sequence[str], ddof: int = 0) -> dict[str, tuple[float, float]]:
        """Global mean and standard deviation of each column, identical on every rank (collective).

        Nulls and NaNs are skipped. Partial moments are combined with Chan's parallel
        formula in float64, so the result matches a one-process computation.
        """
        cols = self._numeric(columns, "global_mean_std")
        local = []
        for col in cols:
            # ChunkedArray.to_numpy() takes no arguments on pyarrow < 13; it copies only when chunked.
            x = np.asarray((col.drop_null() if col.null_count else col).to_numpy(), dtype=np.float64)
            x = x[~np.isnan(x)]
            cnt = int(x.size)
            mean = float(x.mean()) if cnt else 0.0
            m2 = float(((x - mean) ** 2).sum()) if cnt else 0.0
            local.append((cnt, mean, m2))
        allparts = self.comm.allgather(local)
        out: dict[str, tuple[float, float]] = {}
        for j, name in enumerate(columns):
            n_tot, mean_tot, m2_tot = 0, 0.0, 0.0
            for parts in allparts:
                n_b, mean_b, m2_b = parts[j]
                if n_b == 0:
                    continue
                delta = mean_b - mean_tot
                n_new = n_tot + n_b
                mean_tot += delta * n_b / n_new
                m2_tot += m2_b + delta * delta * n_tot * n_b / n_new
                n_tot = n_new
            std = math.sqrt(m2_tot / (n_tot - ddof)) if n_tot - ddof > 0 else float("nan")
            out[name] = (mean_tot if n_tot else float("nan"), std)
        return out

    def global_min_max(self, columns: Sequence[str]) -> dict[str, tuple[float, float]]:
        """Global minimum and maximum of each column, identical on every rank (collective)."""
        cols = self._numeric(columns, "global_min_max")
        local = []
        for col in cols:
            mm = pc.min_max(col)
            local.append((mm["min"].as_py(), mm["max"].as_py()))
        allparts = self.comm.allgather(local)
        out: dict[str, tuple[float, float]] = {}
        for j, name in enumerate(columns):
            lows = [p[j][0] for p in allparts if p[j][0] is not None]
            highs = [p[j][1] for p in allparts if p[j][1] is not None]
            out[name] = (min(lows) if lows else float("nan"), max(highs) if highs else float("nan"))
        return out

    # ------------------------------------------------------------- gathering
    def gather(self, root: int = 0) -> pa.Table | None:
        """The whole global table on ``root`` (None elsewhere). Collective; for small tables."""
        parts = [self.local.slice(0, 0)] * self.world_size
        parts[root] = self.local
        received = exchange_tables(parts, self.comm, "gather")
        if self.rank != root:
            return None
        return pa.concat_tables(received)

    def head(self, n: int = 5, root: int = 0) -> pa.Table | None:
        """The first ``n`` global rows on ``root`` (None elsewhere). Collective."""
        return self.slice_rows(0, n).gather(root)

    # ------------------------------------------------------- global shuffle
    def global_shuffle(self, seed: int = 0, epoch: int = 0) -> GlobalTable:
        """All rows in one seeded permutation of the global table (collective, copies).

        The global row order depends only on ``(seed, epoch)`` and the global row order
        of the input, not on the number of ranks; rank r receives positions
        ``[r*N/P, (r+1)*N/P)`` of the permutation. Cost: every rank computes the
        permutation (8 bytes per global row), and every row moves once through the
        all-to-all exchange (counted as ``exchange`` and ``shuffle`` copies).
        """
        n, p, me = self.num_rows, self.world_size, self.rank
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        out_bounds = np.array([n * r // p for r in range(p + 1)], dtype=np.int64)
        in_bounds = np.concatenate([[0], np.cumsum(self.row_counts)]).astype(np.int64)
        pos = np.empty(n, dtype=np.int64)
        pos[perm] = np.arange(n, dtype=np.int64)
        my_pos = pos[in_bounds[me] : in_bounds[me + 1]]
        dest = np.searchsorted(out_bounds, my_pos, side="right") - 1
        parts = []
        for dst in range(p):
            sel = np.flatnonzero(dest == dst)
            sel = sel[np.argsort(my_pos[sel], kind="stable")]
            parts.append(self.local.take(pa.array(sel)))
        record_copy("shuffle", self.local.nbytes, "global shuffle")
        received = exchange_tables(parts, self.comm, "global shuffle")
        mine = perm[out_bounds[me] : out_bounds[me + 1]]
        src = np.searchsorted(in_bounds, mine, side="right") - 1
        order = np.argsort(src, kind="stable")  # positions grouped by source, increasing
        take = np.empty_like(order)
        take[order] = np.arange(order.size)
        merged = pa.concat_tables(received)
        return self._like(merged.take(pa.array(take)) if merged.num_rows else merged)
