"""CAMELS-US preparation on global tables: per-rank file reading, the distributed join, splits.

Steps (collective unless noted):

1. Each rank reads the Daymet forcing files and the USGS streamflow files of its share of
   the basins (basin ``i`` goes to rank ``i % P``; with 3 basins on 2 ranks that is
   uneven) into two global tables. Forcing files: line 3 is the catchment area (m²),
   line 4 the column names, values separated by mixed spaces and tabs. Streamflow files:
   no header, ``gauge_id Year Mnth Day discharge(cfs) flag``; ``-999`` marks a missing day.
2. ``forcing.join(streamflow, on=["basin", "date"], how="left")`` — the paper's Cylon
   join, here on the core's engine (hash-partition both sides, local hash join).
3. Streamflow from ft³/s to mm/day with the line-3 area; missing days become null and
   are masked (never trained on or scored).
4. ``sort(["basin", "date"])``: a global sample sort, so each basin's days are in order
   (windows never span two basins: ``Window(group="basin")``).
5. Split by date; validation and test keep ``seq_len - 1`` earlier days as warm-up so
   their first target is the first day of the period; normalise inputs and target with
   training-period statistics (global); rebalance every split over the ranks.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

import deeprc_core as drc

from ..shipped_data import data_path

#: Daymet forcing columns (file header -> our name).
FORCING = {
    "dayl(s)": "dayl",
    "prcp(mm/day)": "prcp",
    "srad(W/m2)": "srad",
    "swe(mm)": "swe",
    "tmax(C)": "tmax",
    "tmin(C)": "tmin",
    "vp(Pa)": "vp",
}
INPUTS = list(FORCING.values())
TARGET = "qobs"
#: ft³/s -> m³/s, times seconds per day, times mm per m; divided by the area in m².
CFS_TO_MM_DAY = 0.0283168466 * 86400 * 1000
#: Missing discharge in the USGS files.
MISSING = -999.0


@dataclass(frozen=True)
class Period:
    """An inclusive date range."""

    start: dt.date
    end: dt.date

    @classmethod
    def parse(cls, text: str) -> Period:
        """``"1980-01-01:1994-12-31"`` -> Period."""
        a, b = text.split(":")
        return cls(dt.date.fromisoformat(a), dt.date.fromisoformat(b))


@dataclass(frozen=True)
class CamelsConfig:
    """Which files, which periods, how long the input sequences are."""

    root: Path = field(default_factory=lambda: data_path("camels_us", "full_record_subset"))
    basins: tuple[str, ...] = ("01013500", "07056000", "07290650")
    seq_len: int = 365
    train: Period = Period(dt.date(1980, 1, 1), dt.date(1994, 12, 31))
    val: Period = Period(dt.date(1995, 1, 1), dt.date(1999, 12, 31))
    test: Period = Period(dt.date(2000, 1, 1), dt.date(2014, 12, 31))

    def forcing_file(self, basin: str) -> Path:
        """The Daymet forcing file of ``basin`` (with or without HUC sub-folders)."""
        return _find(self.root, f"{basin}_lump_cida_forcing_leap.txt")

    def streamflow_file(self, basin: str) -> Path:
        """The USGS streamflow file of ``basin``."""
        return _find(self.root, f"{basin}_streamflow_qc.txt")


def _find(root: Path, name: str) -> Path:
    hits = sorted(root.rglob(name))
    if not hits:
        raise FileNotFoundError(f"no {name} under {root}")
    return hits[0]


@dataclass
class CamelsSplits:
    """Normalised train/val/test global tables, sorted by (basin, date)."""

    train: drc.GlobalTable
    val: drc.GlobalTable
    test: drc.GlobalTable
    features: list[str]
    target: str
    stats: dict[str, tuple[float, float]] = field(default_factory=dict)
    config: CamelsConfig = field(default_factory=CamelsConfig)
    #: rows after the join and how many had no streamflow (missing), global counts
    joined_rows: int = 0
    missing_days: int = 0

    def target_mm(self, values: np.ndarray) -> np.ndarray:
        """Normalised target values back in mm/day."""
        mean, std = self.stats[self.target]
        return values * std + mean


def read_forcing_file(path: Path, basin: str) -> pa.Table:
    """One Daymet forcing file as ``basin, date, area_m2, dayl .. vp`` (local)."""
    with path.open() as fh:
        fh.readline()  # latitude
        fh.readline()  # elevation
        area = float(fh.readline())
    df = pd.read_csv(path, sep=r"\s+", skiprows=3, header=0)
    df.columns = [c.strip() for c in df.columns]
    dates = pd.to_datetime(dict(year=df["Year"], month=df["Mnth"], day=df["Day"])).dt.date
    cols: dict[str, object] = {
        "basin": pa.array([basin] * len(df), pa.string()),
        "date": pa.array(dates, pa.date32()),
        "area_m2": pa.array(np.full(len(df), area)),
    }
    for raw, name in FORCING.items():
        cols[name] = pa.array(df[raw].to_numpy(np.float64))
    return pa.table(cols)


def read_streamflow_file(path: Path) -> pa.Table:
    """One USGS streamflow file as ``basin, date, q_cfs`` with -999 as null (local)."""
    df = pd.read_csv(
        path, sep=r"\s+", header=None, names=["basin", "year", "month", "day", "q", "flag"], dtype={"basin": str}
    )
    dates = pd.to_datetime(dict(year=df["year"], month=df["month"], day=df["day"])).dt.date
    q = df["q"].to_numpy(np.float64)
    return pa.table(
        {
            "basin": pa.array(df["basin"].to_numpy(), pa.string()),
            "date": pa.array(dates, pa.date32()),
            "q_cfs": pa.array(q, mask=q == MISSING),
        }
    )


def _schema_of(tables: list[pa.Table], fallback: pa.Schema) -> pa.Table:
    return pa.concat_tables(tables) if tables else fallback.empty_table()


FORCING_SCHEMA = pa.schema(
    [("basin", pa.string()), ("date", pa.date32()), ("area_m2", pa.float64())] + [(c, pa.float64()) for c in INPUTS]
)
STREAMFLOW_SCHEMA = pa.schema([("basin", pa.string()), ("date", pa.date32()), ("q_cfs", pa.float64())])


def read_basins(config: CamelsConfig, comm: drc.Communicator) -> tuple[drc.GlobalTable, drc.GlobalTable]:
    """Forcing and streamflow global tables, each rank reading the files of its basins (collective)."""
    mine = [b for i, b in enumerate(config.basins) if i % comm.size == comm.rank]
    err: Exception | None = None
    forcing: list[pa.Table] = []
    flow: list[pa.Table] = []
    try:
        for basin in mine:
            forcing.append(read_forcing_file(config.forcing_file(basin), basin))
            flow.append(read_streamflow_file(config.streamflow_file(basin)))
    except Exception as exc:  # one rank's unreadable file fails every rank, with its message
        err = exc
    drc.agree(comm, err, "reading CAMELS files")
    return (
        drc.GlobalTable(_schema_of(forcing, FORCING_SCHEMA), comm),
        drc.GlobalTable(_schema_of(flow, STREAMFLOW_SCHEMA), comm),
    )


def join_and_convert(forcing: drc.GlobalTable, streamflow: drc.GlobalTable) -> drc.GlobalTable:
    """Distributed left join on (basin, date), cfs -> mm/day, then a global sort by (basin, date)."""
    joined = forcing.join(streamflow, on=["basin", "date"], how="left")
    q = joined.local.column("q_cfs")
    mm = pc.divide(pc.multiply(q, CFS_TO_MM_DAY), joined.local.column("area_m2"))
    joined = joined.with_column(TARGET, mm).select(["basin", "date", *INPUTS, TARGET])
    return joined.sort(["basin", "date"])


def _period(table: drc.GlobalTable, start: dt.date, end: dt.date) -> drc.GlobalTable:
    d = table.local.column("date")
    mask = pc.and_(pc.greater_equal(d, pa.scalar(start, pa.date32())), pc.less_equal(d, pa.scalar(end, pa.date32())))
    return table.filter(mask)


def normalise(table: drc.GlobalTable, stats: dict[str, tuple[float, float]]) -> drc.GlobalTable:
    """``(x - mean) / std`` as float32 for every column in ``stats``; nulls stay null (local)."""
    out = table
    for name, (mean, std) in stats.items():
        std = std if std > 0 else 1.0  # a constant input (Daymet swe is 0 in these files) stays 0
        col = pc.cast(out.local.column(name), pa.float64())
        out = out.with_column(name, pc.cast(pc.divide(pc.subtract(col, mean), std), pa.float32()))
    return out


def prepare_camels(config: CamelsConfig, comm: drc.Communicator | None = None) -> CamelsSplits:
    """Read, join, convert, sort, split and normalise CAMELS-US (collective)."""
    comm = drc.get_communicator() if comm is None else comm
    forcing, streamflow = read_basins(config, comm)
    table = join_and_convert(forcing, streamflow)
    missing = comm.allreduce_int([table.local.column(TARGET).null_count])[0]
    warm = dt.timedelta(days=config.seq_len - 1)
    train = _period(table, config.train.start, config.train.end)
    val = _period(table, config.val.start - warm, config.val.end)
    test = _period(table, config.test.start - warm, config.test.end)
    stats = train.global_mean_std([*INPUTS, TARGET])  # nulls (missing flow) are skipped
    parts = [normalise(p, stats).rebalance() for p in (train, val, test)]
    return CamelsSplits(parts[0], parts[1], parts[2], list(INPUTS), TARGET, stats, config, table.num_rows, missing)


def basin_names(config: CamelsConfig) -> dict[str, str]:
    """``gauge_id -> gauge_name`` from camels_name.txt (semicolon-separated)."""
    path = _find(config.root, "camels_name.txt")
    df = pd.read_csv(path, sep=";", dtype={"gauge_id": str})
    return dict(zip(df["gauge_id"], df["gauge_name"]))
