"""ETT (Electricity Transformer Temperature) preparation on a global table, on every rank.

Steps, all collective: read the CSV with each rank reading its byte range; add the
calendar features of the long-horizon literature ("timeF": hour, day of week, day of
month, day of year, each scaled to [-0.5, 0.5]); cut Informer's 12/4/4-month split by
global row; compute mean/std on the training rows only (global collectives); normalise
every split with them; rebalance each split over the ranks (keeping the row order). The files are read unmodified (CC BY-ND 4.0): everything derived
here lives in memory only.

Split convention (Informer / Autoformer / PatchTST code, "border1s"): the validation
and test tables start ``input_len`` rows before their first target, so the first window
of a split predicts exactly the split's first row and every target row of the split is
covered: train ``[0, 12m)``, val ``[12m - L, 16m)``, test ``[16m - L, 20m)`` with
``12m = 8640`` hourly rows (``34560`` for the 15-minute files).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import deeprc_core as drc

from ..shipped_data import data_path

#: The six load columns of ETT, then the target.
LOADS = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL"]
TARGET = "OT"
#: Calendar features (Informer's "timeF" encoding, each in [-0.5, 0.5]).
CALENDAR = ["hour_of_day", "day_of_week", "day_of_month", "day_of_year"]
#: Rows per month: 30 days of hourly or 15-minute samples (Informer's convention).
ROWS_PER_MONTH = {"h": 30 * 24, "m": 30 * 24 * 4}


@dataclass(frozen=True)
class EttConfig:
    """Which file and which windows: ``dataset`` is ETTh1, ETTh2, ETTm1 or ETTm2."""

    dataset: str = "ETTh1"
    input_len: int = 96
    horizon: int = 96
    #: "M": forecast all seven series, each on its own history (channel independence, the
    #: NeuralForecast / paper setting); "S": forecast OT only, from the inputs below
    setting: str = "M"
    #: for setting "S": "all" = OT + six loads + calendar as inputs; "ot" = OT + calendar
    inputs: str = "all"
    #: folder of the CSV files; None: ``ett/`` of ``$DEEPRC_DATA``, else of the repo's data/
    data_dir: Path | None = None

    @property
    def path(self) -> Path:
        """The CSV file."""
        name = f"{self.dataset}.csv"
        return self.data_dir / name if self.data_dir is not None else data_path("ett", name)

    @property
    def freq(self) -> str:
        """ "h" (hourly) or "m" (15-minute)."""
        return "m" if self.dataset.startswith("ETTm") else "h"

    @property
    def borders(self) -> tuple[int, int, int]:
        """Global row ends of train, val and test (12, 16 and 20 months)."""
        m = ROWS_PER_MONTH[self.freq]
        return 12 * m, 16 * m, 20 * m


@dataclass
class EttSplits:
    """Normalised train/val/test global tables and what describes them."""

    train: drc.GlobalTable
    val: drc.GlobalTable
    test: drc.GlobalTable
    #: input columns, OT first
    features: list[str]
    #: target column(s), OT first
    target: list[str]
    #: training-split (mean, std) of every normalised column, identical on all ranks
    stats: dict[str, tuple[float, float]] = field(default_factory=dict)
    config: EttConfig = field(default_factory=EttConfig)

    def ot(self, values: np.ndarray) -> np.ndarray:
        """OT's values, ``(windows, horizon)``, from flattened ``(windows, horizon * targets)`` ones."""
        n = len(values)
        return values.reshape(n, self.config.horizon, len(self.target))[:, :, 0]

    def ot_celsius(self, values: np.ndarray) -> np.ndarray:
        """Normalised OT values back in degrees C."""
        mean, std = self.stats[TARGET]
        return values * std + mean


def calendar_features(table: drc.GlobalTable, freq: str = "h", date: str = "date") -> drc.GlobalTable:
    """Add the timeF calendar columns computed from ``date`` (local: no communication)."""

    def scaled(values: pa.ChunkedArray, offset: float, span: float) -> pa.ChunkedArray:
        return pc.cast(
            pc.subtract(pc.divide(pc.subtract(pc.cast(values, pa.float64()), offset), span), 0.5), pa.float32()
        )

    ts = table.local.column(date)
    out = table
    if freq == "m":  # quarter-hour data also gets the minute of the hour
        out = out.with_column("minute_of_hour", scaled(pc.minute(ts), 0.0, 59.0))
    out = out.with_column("hour_of_day", scaled(pc.hour(ts), 0.0, 23.0))
    out = out.with_column("day_of_week", scaled(pc.day_of_week(ts), 0.0, 6.0))
    out = out.with_column("day_of_month", scaled(pc.day(ts), 1.0, 30.0))
    return out.with_column("day_of_year", scaled(pc.day_of_year(ts), 1.0, 365.0))


def normalise(table: drc.GlobalTable, stats: dict[str, tuple[float, float]]) -> drc.GlobalTable:
    """``(x - mean) / std`` for every column in ``stats``, as float32 (local)."""
    out = table
    for name, (mean, std) in stats.items():
        col = out.local.column(name)
        out = out.with_column(
            name, pc.cast(pc.divide(pc.subtract(pc.cast(col, pa.float64()), mean), std), pa.float32())
        )
    return out


def input_columns(config: EttConfig) -> list[str]:
    """The model's input columns for ``config`` (OT first, calendar last)."""
    if config.setting == "M":
        return [TARGET, *LOADS]
    if config.setting != "S":
        raise ValueError(f"setting={config.setting!r}: use 'M' (all seven series) or 'S' (OT only)")
    calendar = (["minute_of_hour"] if config.freq == "m" else []) + CALENDAR
    loads = LOADS if config.inputs == "all" else []
    if config.inputs not in ("all", "ot"):
        raise ValueError(f"inputs={config.inputs!r}: use 'all' (OT + loads + calendar) or 'ot' (OT + calendar)")
    return [TARGET, *loads, *calendar]


def prepare_ett(config: EttConfig, comm: drc.Communicator | None = None) -> EttSplits:
    """Read, featurise, split and normalise ETT on every rank (collective)."""
    table = drc.read_csv(config.path, comm=comm, timestamp_parsers=["%Y-%m-%d %H:%M:%S"])
    table = calendar_features(table, config.freq)
    train_end, val_end, test_end = config.borders
    lookback = config.input_len
    if table.num_rows < test_end:
        raise ValueError(f"{config.path} has {table.num_rows} rows; the 12/4/4-month split needs {test_end}")
    train = table.slice_rows(0, train_end)
    val = table.slice_rows(train_end - lookback, val_end)
    test = table.slice_rows(val_end - lookback, test_end)
    numeric = [TARGET, *LOADS]
    stats = train.global_mean_std(numeric)  # training rows only: no look-ahead into val/test
    features = input_columns(config)
    keep = ["date", *features]
    # The reader cut the file into equal byte ranges, so one rank may hold a whole split
    # (train lies entirely on rank 0 of 2): rebalance each split to equal row counts, in order.
    splits = [normalise(part, stats).select(keep).rebalance() for part in (train, val, test)]
    target = [TARGET, *LOADS] if config.setting == "M" else [TARGET]
    return EttSplits(splits[0], splits[1], splits[2], features, target, stats, config)
