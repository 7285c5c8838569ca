"""ETTh1 for NeuralForecast, prepared on a Deep RC global table and handed over without pandas.

Collective steps (every rank of a task runs them): read the CSV (each rank its byte range) ->
keep Informer's 20 months (rows ``[0, 14400)``) -> mean/std of the 12 training months only ->
normalise the seven series -> long format ``unique_id, ds, y`` partitioned **by series**: one
all-to-all sends series ``k`` to rank ``k % ranks``, so each rank holds whole series and reads
only its own (the partition a data-parallel NeuralForecast model trains on).

Hand-over, per rank (:func:`to_dataset`): ``y`` and ``available_mask`` are packed once into one
``(rows, 2)`` float32 column (``deeprc_core.pack_columns``, counted ``pack``); a zero-copy view
of it becomes a torch tensor (``torch.from_numpy``), and NeuralForecast's ``TimeSeriesDataset``
is built straight from that tensor and the series' row offsets. NeuralForecast clones the array
it is given (its own copy; counted here as ``neuralforecast``). No pandas DataFrame is made:
``NeuralForecast.fit(df)`` would need one (a ``from-pandas``-sized copy plus its sort), so the
pipeline calls each model's ``fit(dataset)`` / ``predict(dataset)`` instead. (NeuralForecast
itself imports pandas for column names only.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

import deeprc_core as drc

from .ett_data import LOADS, TARGET, EttConfig, normalise

#: The seven series, OT first (NeuralForecast's ``unique_id`` values).
SERIES = [TARGET, *LOADS]
#: Columns of the long-format table, NeuralForecast's names.
LONG_COLUMNS = ["unique_id", "ds", "y", "available_mask"]


def owner(series_no: int, ranks: int) -> int:
    """The rank that holds series number ``series_no`` (round robin: 4 + 3 on 2 ranks)."""
    return series_no % ranks


def _long_part(wide: pa.Table, series: list[str]) -> pa.Table:
    """``wide``'s rows of ``series`` in long format, series after series (``ds`` and ``y`` reuse the columns)."""
    n = wide.num_rows
    ones = pa.array(np.ones(n, dtype=np.float32))
    parts = [
        pa.table(
            {"unique_id": pa.array([name] * n, pa.string()), "ds": wide.column("date"), "y": wide.column(name)}
        ).append_column("available_mask", pa.chunked_array([ones]))
        for name in series
    ]
    if parts:
        return pa.concat_tables(parts)
    return pa.table(
        {
            "unique_id": pa.array([], pa.string()),
            "ds": pa.array([], wide.schema.field("date").type),
            "y": pa.array([], pa.float32()),
            "available_mask": pa.array([], pa.float32()),
        }
    )


def melt_by_series(wide: drc.GlobalTable, series: list[str]) -> tuple[drc.GlobalTable, list[str]]:
    """Long format, series ``k`` on rank ``k % ranks`` in time order (collective: one all-to-all).

    Each rank cuts its rows (a contiguous time range) of every series and sends them to the
    series' owner; the owner stacks the pieces by source rank, which is time order because the
    reader gave ranks consecutive rows. Returns the table and this rank's series, in order.
    """
    comm = wide.comm
    p = comm.size
    mine = [s for k, s in enumerate(series) if owner(k, p) == comm.rank]
    counts = wide.row_counts  # rows per source rank, identical for all its series
    local = wide.local
    pieces = drc.exchange_tables(
        [_long_part(local, [s for k, s in enumerate(series) if owner(k, p) == dst]) for dst in range(p)],
        comm,
        "melt by series",
    )
    # piece from ``src`` = series of ``mine`` back to back, counts[src] rows each: zero-copy slices
    ordered = [pieces[src].slice(i * counts[src], counts[src]) for i in range(len(mine)) for src in range(p)]
    table = pa.concat_tables(ordered) if ordered else _long_part(local, [])
    return drc.GlobalTable.from_arrow(table, comm), mine


@dataclass
class NfData:
    """One rank's share of the long-format ETTh1: whole series, packed for NeuralForecast."""

    #: long format, packed: ``unique_id``, ``ds`` and ``temporal`` = (y, available_mask) rows
    table: drc.GlobalTable
    #: this rank's series, in row order
    series: list[str]
    #: row offsets of the series in ``table.local`` (NeuralForecast's ``indptr``)
    indptr: np.ndarray
    #: training-split (mean, std) of every series
    stats: dict[str, tuple[float, float]]
    config: EttConfig

    @property
    def temporal(self) -> np.ndarray:
        """``(rows, 2)`` float32 view of (y, available_mask): no copy."""
        return drc.column_view(self.table.local, "temporal")

    def y(self, name: str) -> np.ndarray:
        """Normalised values of one local series (a view)."""
        k = self.series.index(name)
        return self.temporal[self.indptr[k] : self.indptr[k + 1], 0]

    @property
    def sizes(self) -> tuple[int, int]:
        """NeuralForecast's ``(val_size, test_size)``: the 4 validation and the 4 test months."""
        train_end, val_end, test_end = self.config.borders
        return val_end - train_end, test_end - val_end


def prepare(config: EttConfig, comm: drc.Communicator | None = None) -> NfData:
    """Read, normalise, melt and pack ETT for NeuralForecast (collective; see the module docstring)."""
    table = drc.read_csv(config.path, comm=comm, timestamp_parsers=["%Y-%m-%d %H:%M:%S"])
    train_end, _, test_end = config.borders
    if table.num_rows < test_end:
        raise ValueError(f"{config.path} has {table.num_rows} rows; the 12/4/4-month split needs {test_end}")
    table = table.slice_rows(0, test_end).select(["date", *SERIES])
    stats = table.slice_rows(0, train_end).global_mean_std(SERIES)  # training rows only: no look-ahead
    long, mine = melt_by_series(normalise(table, stats), SERIES)
    local = long.local
    packed = drc.pack_columns(local, ["y", "available_mask"], name="temporal", keep=["unique_id", "ds"])
    indptr = (np.arange(len(mine) + 1) * table.num_rows).astype(np.int32)  # every series has every row
    return NfData(drc.GlobalTable.from_arrow(packed, long.comm), mine, indptr, stats, config)


def to_dataset(data: NfData) -> Any:
    """NeuralForecast's ``TimeSeriesDataset`` over this rank's series (NeuralForecast clones the rows once)."""
    import pandas as pd  # NeuralForecast's column index type; no DataFrame is made
    import torch
    from neuralforecast.tsdataset import TimeSeriesDataset

    temporal = torch.from_numpy(data.temporal)  # shares the packed column's memory
    dataset = TimeSeriesDataset(
        temporal=temporal, temporal_cols=pd.Index(["y", "available_mask"]), indptr=data.indptr, y_idx=0
    )
    drc.record_copy("neuralforecast", dataset.temporal.numel() * 4, "TimeSeriesDataset's clone of the rows")
    return dataset
