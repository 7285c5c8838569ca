"""Keras 3 + tf.distribute on CAMELS-US with Deep RC: a keras-io style script, 1 process or N workers.

Each worker reads its own basins into its partition of a global table; ``model.fit``
trains with MultiWorkerMirroredStrategy over the ranks the launcher wired, with the usual
callbacks, validation data and no ``steps_per_epoch``; the same script runs unchanged on
one process::

    python examples/keras_camels.py                             # one process
    deeprc-launch --ranks 2 examples/keras_camels.py            # Deep RC's launcher
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
    parser.add_argument("--out", default="results/keras_camels", help="checkpoint and backup folder")
    args = parser.parse_args()

    root = data_path("camels_us", "nh_test_subset")
    gauges = (root / "4_basins_test_set.txt").read_text().split()
    comm = get_communicator()
    mine = list(range(comm.rank, len(gauges), comm.size))  # rank r reads basins r, r+P, ...
    local = pa.concat_tables([read_basin(root, gauges[i], i) for i in mine]).combine_chunks()
    table = GlobalTable.from_arrow(local)

    # 2. The dataset: per-replica batches of this rank's partition, agreed steps; the last 20 % of
    #    the rows (in global order) validate. even='auto' spreads both parts over the workers.
    window = Window(input_len=30, horizon=1, offset=-1, group="basin")  # 30 days in, today's flow out
    train, val = table.split([0.8, 0.2])
    data = deeprc_tf.make_dataset(train, FEATURES, "qobs", args.batch_size, strategy=strategy, window=window, val=val)

    # 3. The model in the strategy's scope, then fit as any keras-io script does: no steps_per_epoch
    #    (the dataset knows them), callbacks that work on N workers, progress from the chief only.
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
    out = Path(args.out)
    callbacks = [
        keras.callbacks.EarlyStopping(patience=2, restore_best_weights=True),
        deeprc_tf.ModelCheckpoint(str(out / "best.weights.h5"), save_weights_only=True, save_best_only=True),
        deeprc_tf.BackupAndRestore(str(out / "backup")),  # rerun after a lost worker: resumes at the next epoch
        data.callback,  # the plan's epoch follows Keras's (exact shuffles after a resume)
    ]
    history = model.fit(
        data.dataset, epochs=args.epochs, validation_data=data.validation_data, callbacks=callbacks, verbose=2
    )
    if comm.rank == 0:
        print(
            f"trained on {comm.size} worker(s), {data.steps_per_epoch} steps/epoch; "
            f"loss {history.history['loss']}, val_loss {history.history['val_loss']}"
        )


if __name__ == "__main__":
    main()
