"""A tiny CAMELS-US reader for the deeprc-tf tests (the real pipeline is issue #8).

Reads the shipped ``camels_us/nh_test_subset`` (4 basins, 2000-2002, Daymet forcing)
into one pyarrow table per basin: standardised-ish forcing features, log streamflow
target, an integer basin id (for window groups) and the day number.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from examples.shipped_data import data_path

REPO = Path(__file__).resolve().parents[2]
SUBSET = "camels_us/nh_test_subset"
FEATURES = ["dayl", "prcp", "srad", "tmax", "tmin", "vp"]
TARGET = "qobs"
#: rough scales so the features are O(1) without global statistics
_SCALE = {
    "dayl": (43200.0, 8000.0),
    "prcp": (3.0, 6.0),
    "srad": (300.0, 120.0),
    "tmax": (15.0, 10.0),
    "tmin": (5.0, 10.0),
    "vp": (1000.0, 600.0),
}


def basins() -> list[str]:
    """The subset's gauge ids, in file order."""
    text = data_path(SUBSET, "4_basins_test_set.txt").read_text()
    return [b.strip() for b in text.split() if b.strip()]


def read_basin(gauge: str, basin_id: int) -> pa.Table:
    """Forcing joined with streamflow on the date (missing -999 -> NaN)."""
    root = data_path(SUBSET)
    lines = (root / "basin_mean_forcing" / "daymet" / f"{gauge}_lump_cida_forcing_leap.txt").read_text().splitlines()
    area = float(lines[2])
    rows = np.array([ln.split() for ln in lines[4:] if ln.strip()], dtype=np.float64)
    flow = np.array(
        [
            ln.split()[1:5]
            for ln in (root / "usgs_streamflow" / f"{gauge}_streamflow_qc.txt").read_text().splitlines()
            if ln.strip()
        ],
        dtype=np.float64,
    )
    q = {(int(y), int(m), int(d)): v for y, m, d, v in flow}
    keys = [(int(y), int(m), int(d)) for y, m, d in rows[:, :3]]
    keep = np.array([k in q for k in keys])
    rows = rows[keep]
    qcfs = np.array([q[k] for k, ok in zip(keys, keep) if ok])
    qmm = np.where(qcfs < 0, np.nan, qcfs * 0.0283168466 * 86400 * 1000 / area)
    cols = {name: rows[:, 4 + i] for i, name in enumerate(["dayl", "prcp", "srad", "swe", "tmax", "tmin", "vp"])}
    out = {f: ((cols[f] - _SCALE[f][0]) / _SCALE[f][1]).astype(np.float32) for f in FEATURES}
    out[TARGET] = np.log1p(qmm).astype(np.float32)
    out["basin"] = np.full(len(rows), basin_id, dtype=np.int32)
    out["day"] = np.arange(len(rows), dtype=np.int32)
    return pa.table(out)


def read_basins(indices: list[int]) -> pa.Table:
    """The basins ``indices`` (positions in :func:`basins`), concatenated in that order."""
    gauges = basins()
    return pa.concat_tables([read_basin(gauges[i], i) for i in indices]).combine_chunks()
