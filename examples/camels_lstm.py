"""Pipeline B: CAMELS-US hydrology with Keras 3 under tf.distribute, on Deep RC global tables.

Run it on 2 workers with any launcher (every rank runs this whole script)::

    deeprc-launch --ranks 2 examples/camels_lstm.py --quick
    mpirun -np 2 python examples/camels_lstm.py
    torchrun --nproc-per-node 2 examples/camels_lstm.py --seq-len 365 --epochs 20

Stages: each rank reads the Daymet forcing and USGS streamflow files of its basins into
two global tables -> distributed join on (basin, date) (the paper's Cylon join) -> cfs to
mm/day, -999 masked -> global sort by (basin, date) -> train 1980-1994 / validate
1995-1999 / test 2000-2014 -> normalise with training statistics (collective) -> LSTM
trained with ``deeprc_tf.strategy()`` + ``deeprc_tf.make_dataset`` -> every test day
predicted once (each rank its windows, gathered on rank 0) -> NSE, normalised NSE and MSE
per basin, hydrographs, tables in results/camels/.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file (launchers exec scripts): make `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.pipelines.runtime import limit_threads

limit_threads(1)

import numpy as np  # noqa: E402

import deeprc_core as drc  # noqa: E402
from examples.pipelines import metrics, plots, report  # noqa: E402
from examples.pipelines.camels_data import CamelsConfig, Period, basin_names, prepare_camels  # noqa: E402
from examples.pipelines.predict import predict_all, test_batches  # noqa: E402
from examples.pipelines.runtime import Run  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of pipeline B."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--seq-len", type=int, default=None, help="days of forcing per sample (default 270; --quick 90; --full 365)"
    )
    p.add_argument("--hidden", type=int, default=None, help="LSTM units (default 32; --quick 16; --full 64)")
    p.add_argument("--epochs", type=int, default=None, help="default 6; --quick 3; --full 30")
    p.add_argument("--batch-size", type=int, default=256, help="global batch (all workers)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 3e-3; --quick 1e-2)")
    p.add_argument(
        "--train-stride", type=int, default=None, help="train on sequences ending every k-th day (default 4; --full 1)"
    )
    p.add_argument("--train", default="1980-01-01:1994-12-31", help="training period START:END (inclusive)")
    p.add_argument("--val", default="1995-01-01:1999-12-31")
    p.add_argument("--test", default="2000-01-01:2014-12-31")
    p.add_argument("--plot-years", type=int, default=3, help="years of the test period drawn in each hydrograph")
    p.add_argument("--quick", action="store_true", help="a ~1 minute end-to-end run (tests use it)")
    p.add_argument("--full", action="store_true", help="365 days, 64 units, every sequence, 30 epochs (long on CPUs)")
    p.add_argument("--out", default=None, help="output folder (default results/camels)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    size = "full" if args.full else "quick" if args.quick else "demo"
    defaults = {
        "demo": {"seq_len": 270, "hidden": 32, "epochs": 6, "lr": 3e-3, "train_stride": 4},
        "quick": {"seq_len": 90, "hidden": 16, "epochs": 3, "lr": 1e-2, "train_stride": 4},
        "full": {"seq_len": 365, "hidden": 64, "epochs": 30, "lr": 1e-3, "train_stride": 1},
    }[size]
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run pipeline B on this rank (every rank calls it)."""
    args = parse_args(argv)
    t_start = time.perf_counter()
    import deeprc_tf

    strategy = deeprc_tf.strategy()  # first, before TensorFlow runs any op
    import keras
    import tensorflow as tf

    from examples.pipelines.hydro_models import build_lstm

    keras.utils.set_random_seed(args.seed)
    run = Run("camels", args.out)
    run.timings["strategy"] = time.perf_counter() - t_start
    config = CamelsConfig(
        seq_len=args.seq_len, train=Period.parse(args.train), val=Period.parse(args.val), test=Period.parse(args.test)
    )
    run.log(
        f"{run.size} worker(s), communicator {run.comm.kind}, {type(strategy).__name__} with "
        f"{strategy.num_replicas_in_sync} replicas; basins {', '.join(config.basins)}; sequences of {config.seq_len} days"
    )

    with run.stage("read + join + prepare"):
        splits = prepare_camels(config, run.comm)
    run.log(
        f"joined {splits.joined_rows} basin-days ({splits.missing_days} without streamflow, masked); "
        f"train/val/test rows {splits.train.num_rows}/{splits.val.num_rows}/{splits.test.num_rows}, "
        f"rank 0 holds {splits.train.local_num_rows}/{splits.val.local_num_rows}/{splits.test.local_num_rows}"
    )

    window = drc.Window(config.seq_len, horizon=1, offset=-1, group="basin")  # seq-to-one: flow of the last day
    train_window = drc.Window(config.seq_len, 1, args.train_stride, -1, "basin")
    with run.stage("train"):
        data = deeprc_tf.make_dataset(
            splits.train,
            splits.features,
            splits.target,
            args.batch_size,
            strategy=strategy,
            window=train_window,
            val=splits.val,
            eval_window=window,  # validation scores every sequence, whatever the training stride
            shuffle=True,
            seed=args.seed,
        )
        with strategy.scope():
            model = build_lstm(config.seq_len, len(splits.features), args.hidden, lr=args.lr)
        best = BestWeights(run.log, args.epochs, data.steps_per_epoch)
        model.fit(**data.fit_kwargs([best]), epochs=args.epochs, verbose=0)
        if best.weights is not None:
            model.set_weights(best.weights)

    with run.stage("predict"):
        batches = test_batches(splits.test, splits.features, splits.target, window, batch_size=512)
        forward = tf.function(lambda x: model(x, training=False))
        got = predict_all(batches, lambda x: forward(np.ascontiguousarray(x)).numpy(), target_feature=None)
        meta = splits.test.select(["basin", "date"]).gather(0)

    paths: dict[str, Path] = {}
    with run.stage("report"):
        if run.rank == 0 and got is not None and meta is not None:
            paths = _report(run, got, meta, splits, config, args, best)
    run.finish(
        {
            "epochs": args.epochs,
            "best_epoch": best.best_epoch + 1,
            "steps_per_epoch": data.steps_per_epoch,
            "seq_len": config.seq_len,
            "hidden": args.hidden,
            "quick": args.quick,
        }
    )
    if run.rank == 0:
        print(paths["md"].read_text(), flush=True)
        run.log(f"tables: {paths['md']} (.csv, .json); plots: {run.out / 'plots'}; timings: {run.out / 'timings.json'}")
    return 0


def _keras_callback_base() -> type:
    import keras

    return keras.callbacks.Callback


class BestWeights(_keras_callback_base()):  # type: ignore[misc]
    """Print each epoch's losses (rank 0) and keep the weights of the best validation epoch."""

    def __init__(self, log, epochs: int, steps: int) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.log, self.epochs, self.steps = log, epochs, steps
        self.best_loss, self.best_epoch, self.weights = float("inf"), -1, None
        self.history: list[dict[str, float]] = []
        self.t0 = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs=None) -> None:  # type: ignore[no-untyped-def]
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs=None) -> None:  # type: ignore[no-untyped-def]
        logs = logs or {}
        loss, val = float(logs.get("loss", np.nan)), float(logs.get("val_loss", np.nan))
        self.history.append({"loss": loss, "val_loss": val})
        if val < self.best_loss:
            self.best_loss, self.best_epoch, self.weights = val, epoch, self.model.get_weights()
        self.log(
            f"  epoch {epoch + 1}/{self.epochs}: {self.steps} steps, train mse {loss:.4f}, val mse {val:.4f} "
            f"({time.perf_counter() - self.t0:.1f} s)"
        )


def _report(run: Run, got, meta, splits, config: CamelsConfig, args, best: BestWeights) -> dict:  # type: ignore[no-untyped-def]
    rows_of = got.index + config.seq_len - 1  # the target is the window's last day
    basins = np.asarray(meta.column("basin").to_numpy(zero_copy_only=False))[rows_of]
    dates = np.asarray(meta.column("date").to_numpy(zero_copy_only=False))[rows_of].astype("datetime64[D]")
    sim = splits.target_mm(got.pred.reshape(-1))
    obs = splits.target_mm(got.true.reshape(-1))
    names = basin_names(config)
    rows = []
    for basin in config.basins:
        sel = basins == basin
        if not sel.any():
            continue
        n = metrics.nse(sim[sel], obs[sel])
        rows.append(
            {
                "basin": basin,
                "name": names.get(basin, ""),
                "nse": n,
                "nnse": metrics.nnse(n),
                "mse": metrics.mse(sim[sel], obs[sel]),
                "test_days": int(sel.sum()),
            }
        )
        end = np.datetime64(config.test.start) + np.timedelta64(365 * args.plot_years, "D")
        shown = sel & (dates < end)
        plots.hydrograph_plot(
            run.out / "plots" / f"camels_{basin}.png",
            dates[shown],
            obs[shown],
            sim[shown],
            f"{basin} {names.get(basin, '')}: test period, NSE {n:.2f}",
        )
        run.log(f"basin {basin}: NSE {n:.3f}  NNSE {metrics.nnse(n):.3f}  MSE {rows[-1]['mse']:.3f}")
    mean_nse = float(np.mean([r["nse"] for r in rows]))
    rows.append(
        {
            "basin": "mean",
            "name": "",
            "nse": mean_nse,
            "nnse": float(np.mean([r["nnse"] for r in rows])),
            "mse": float(np.mean([r["mse"] for r in rows])),
            "test_days": int(sum(r["test_days"] for r in rows)),
        }
    )
    preamble = (
        f"### CAMELS-US Daymet, {len(config.basins)} basins, LSTM({args.hidden}) on {config.seq_len}-day sequences, "
        f"{run.size} workers, {args.epochs} epochs (best {best.best_epoch + 1}){' (quick)' if args.quick else ''}\n\n"
        f"Test {config.test.start}..{config.test.end}; streamflow in mm/day, missing days (-999) masked. "
        "NSE 0 = predicting the observed mean (the naive baseline); NNSE = 1 / (2 - NSE)."
    )
    return report.write_table(run.out, "metrics", rows, report.CAMELS_COLUMNS, preamble)


if __name__ == "__main__":
    sys.exit(main())
