"""Keras 3 + tf.distribute on CAMELS-US with Deep RC: a small LSTM trained on 2 workers.

Each worker reads its own basins into its partition of a global table; ``model.fit``
trains with MultiWorkerMirroredStrategy over the ranks the launcher wired::

    deeprc-launch -n 2 python examples/keras_camels.py          # Deep RC's launcher
    mpirun -np 2 python examples/keras_camels.py                # or Open MPI
    torchrun --nproc-per-node 2 examples/keras_camels.py        # or any launcher the core understands

Data: ``camels_us/nh_test_subset`` of ``$DEEPRC_DATA``, else of the repo's ``data/``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import deeprc_tf  # noqa: E402

# 1. The strategy first: before TensorFlow runs any op.
strategy = deeprc_tf.strategy()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from deeprc_core import GlobalTable, Window, get_communicator  # noqa: E402

if __package__ in (None, ""):  # run as a file (launchers exec scripts): make `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from examples.shipped_data import data_path  # noqa: E402  ($DEEPRC_DATA, else the repo's data/)

FEATURES = ["dayl", "prcp", "srad", "tmax", "tmin", "vp"]
SCALE = {
    "dayl": (43200, 8000),
    "prcp": (3, 6),
    "srad": (300, 120),
    "tmax": (15, 10),
    "tmin": (5, 10),
    "vp": (1000, 600),
}


def read_basin(root: Path, gauge: str, basin_id: int) -> pa.Table:
    """Daymet forcing joined with streamflow (mm/day, log1p); -999 becomes NaN and is skipped."""
    lines = (root / "basin_mean_forcing/daymet" / f"{gauge}_lump_cida_forcing_leap.txt").read_text().splitlines()
    area = float(lines[2])  # m2, line 3 of the forcing file
    rows = np.array([ln.split() for ln in lines[4:] if ln.strip()], dtype=np.float64)
    flow = {
        tuple(int(v) for v in p[1:4]): float(p[4])
        for p in (
            ln.split() for ln in (root / "usgs_streamflow" / f"{gauge}_streamflow_qc.txt").read_text().splitlines()
        )
        if p
    }
    keys = [tuple(int(v) for v in r[:3]) for r in rows]
    keep = np.array([k in flow for k in keys])
    q = np.array([flow[k] for k in keys if k in flow])
    q = np.where(q < 0, np.nan, q * 0.0283168466 * 86400 * 1000 / area)
    values = dict(zip(["dayl", "prcp", "srad", "swe", "tmax", "tmin", "vp"], rows[keep, 4:].T))
    table = {f: ((values[f] - SCALE[f][0]) / SCALE[f][1]).astype(np.float32) for f in FEATURES}
    table["qobs"] = np.log1p(q).astype(np.float32)
    table["basin"] = np.full(int(keep.sum()), basin_id, dtype=np.int32)
    return pa.table(table)


def main() -> None:
    """Read this rank's basins, build the dataset, fit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size")
    args = parser.parse_args()

    root = data_path("camels_us", "nh_test_subset")
    gauges = (root / "4_basins_test_set.txt").read_text().split()
    comm = get_communicator()
    mine = list(range(comm.rank, len(gauges), comm.size))  # rank r reads basins r, r+P, ...
    local = pa.concat_tables([read_basin(root, gauges[i], i) for i in mine]).combine_chunks()
    table = GlobalTable.from_arrow(local)

    # 2. The dataset: per-replica batches of this rank's partition, agreed steps.
    window = Window(input_len=30, horizon=1, offset=-1, group="basin")  # 30 days in, today's flow out
    data = deeprc_tf.make_dataset(
        table, FEATURES, "qobs", args.batch_size, strategy=strategy, window=window, even="rebalance"
    )

    # 3. The model in the strategy's scope, then fit with the agreed steps.
    with strategy.scope():
        model = keras.Sequential(
            [
                keras.Input((30, len(FEATURES))),
                keras.layers.LSTM(16),
                keras.layers.Dense(1),
                keras.layers.Reshape((1, 1)),
            ]
        )
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    history = model.fit(**data.fit_kwargs(), epochs=args.epochs, verbose=2 if comm.rank == 0 else 0)
    if comm.rank == 0:
        print(f"trained on {comm.size} worker(s), {data.steps_per_epoch} steps/epoch; loss {history.history['loss']}")


if __name__ == "__main__":
    main()
