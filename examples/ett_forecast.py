"""Pipeline A: ETT forecasting with Lightning on a Deep RC global table, as one multi-rank job.

Run it on 2 ranks with any launcher (every rank runs this whole script)::

    deeprc-launch --ranks 2 examples/ett_forecast.py --quick
    torchrun --nproc-per-node 2 examples/ett_forecast.py
    mpirun -np 2 python examples/ett_forecast.py --models nlinear,patchtst --epochs 20

Stages: read ETTh1 as a global table (each rank its byte range) -> calendar features ->
Informer's 12/4/4-month split by global row -> mean/std of the training rows (collective)
-> normalise -> windows of 96 steps in, 96 out (core ``Window``) -> train each model
data-parallel (``DeepRCDataModule`` + ``DeepRCStrategy``) -> predict every test window
once (each rank its own, gathered on rank 0) -> MAE/MSE (normalised) and MAPE (°C) beside
the paper's Table 3 and a naive last-value baseline -> plots and tables in results/ett/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (launchers exec scripts): make `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.pipelines.runtime import limit_threads

limit_threads(1)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import deeprc_core as drc  # noqa: E402
from examples.pipelines import metrics, plots, report  # noqa: E402
from examples.pipelines.ett_data import EttConfig, prepare_ett  # noqa: E402
from examples.pipelines.forecast_models import DISPLAY, LEARNING_RATES, MODEL_NAMES, build_model  # noqa: E402
from examples.pipelines.predict import predict_all, test_batches  # noqa: E402
from examples.pipelines.runtime import Run  # noqa: E402
from examples.pipelines.torch_glue import TrainConfig, resolve_glue, train  # noqa: E402

#: Models trained by default (demo size) and by --quick.
DEFAULT_MODELS = ("nlinear", "dlinear", "nbeats", "tide", "gru", "patchtst")
QUICK_MODELS = ("nlinear", "gru", "patchtst")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of pipeline A."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", default="ETTh1", choices=["ETTh1", "ETTh2", "ETTm1", "ETTm2"])
    p.add_argument("--models", default=None, help=f"comma-separated, from {', '.join(MODEL_NAMES)} (default: demo set)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per model (default 3; --quick 1; --full 20)")
    p.add_argument("--batch-size", type=int, default=None, help="windows per rank per step (default 64; --quick 32)")
    p.add_argument("--input-len", type=int, default=96)
    p.add_argument("--horizon", type=int, default=96)
    p.add_argument(
        "--setting",
        default="M",
        choices=["M", "S"],
        help="M: forecast all 7 series, channel-independent (the paper's NeuralForecast setting); S: OT only",
    )
    p.add_argument(
        "--inputs", default="all", choices=["all", "ot"], help="for -S: all = OT + loads + calendar; ot = OT + calendar"
    )
    p.add_argument("--train-stride", type=int, default=None, help="train on every k-th window (default 4; --full 1)")
    p.add_argument(
        "--glue", default="auto", choices=["auto", "lightning", "core"], help="training glue (see torch_glue)"
    )
    p.add_argument("--quick", action="store_true", help="a ~1 minute end-to-end run (tests use it)")
    p.add_argument("--full", action="store_true", help="all seven models, 20 epochs (long on 2 CPU cores)")
    p.add_argument("--out", default=None, help="output folder (default results/ett)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.models is None:
        args.models = ",".join(MODEL_NAMES if args.full else QUICK_MODELS if args.quick else DEFAULT_MODELS)
    if args.epochs is None:
        args.epochs = 20 if args.full else 1 if args.quick else 3
    if args.train_stride is None:
        args.train_stride = 1 if args.full else 4
    if args.batch_size is None:
        args.batch_size = 32 if args.quick else 64
    return args


def main(argv: list[str] | None = None) -> int:
    """Run pipeline A on this rank (every rank calls it)."""
    args = parse_args(argv)
    torch.set_num_threads(1)
    run = Run("ett", args.out)
    glue = resolve_glue(args.glue)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    config = EttConfig(args.dataset, args.input_len, args.horizon, args.setting, args.inputs)
    run.log(
        f"{run.size} rank(s), communicator {run.comm.kind}, glue {glue}; {config.dataset} setting {config.setting}, "
        f"{config.input_len} -> {config.horizon} steps, models {', '.join(names)}, {args.epochs} epoch(s)"
    )

    with run.stage("read + prepare"):
        splits = prepare_ett(config, run.comm)
    run.log(
        f"rank 0 holds {splits.train.local_num_rows}/{splits.val.local_num_rows}/{splits.test.local_num_rows} "
        f"train/val/test rows of {splits.train.num_rows}/{splits.val.num_rows}/{splits.test.num_rows}; "
        f"OT train mean {splits.stats['OT'][0]:.2f} std {splits.stats['OT'][1]:.2f}"
    )
    window = drc.Window(config.input_len, config.horizon)
    features, n_features, n_targets = splits.features, len(splits.features), len(splits.target)
    horizon = config.horizon

    def naive_forecast(x: np.ndarray) -> np.ndarray:
        # targets are the first input columns: repeat each one's last observed value
        return metrics.last_value_forecast(x[:, :, :n_targets], horizon).reshape(len(x), -1)

    with run.stage("test windows"):
        batches = test_batches(splits.test, features, splits.target, window)
        naive = predict_all(batches, naive_forecast)

    rows = []
    gathered = {}
    if naive is not None:
        run.log(f"{len(naive.index)} test windows (each scored once)")
        rows.append(_row("naive (last value)", naive.pred, naive.true, splits))

    for name in names:
        torch.manual_seed(args.seed)
        model = build_model(name, config.input_len, horizon, n_features, channel_independent=config.setting == "M")
        params = sum(p.numel() for p in model.parameters())
        run.log(f"training {DISPLAY[name]} ({params} parameters)")
        cfg = TrainConfig(args.epochs, args.batch_size, LEARNING_RATES[name], args.seed, args.train_stride)
        with run.stage(f"train {name}"):
            result = train(glue, model, splits.train, splits.val, features, splits.target, window, cfg, run.log)
        with run.stage(f"predict {name}"):
            with torch.no_grad():
                got = predict_all(batches, lambda x, m=model: m(torch.from_numpy(np.ascontiguousarray(x))).numpy())
        if got is not None:
            row = _row(DISPLAY[name], got.pred, got.true, splits)
            row.update(epochs=f"{args.epochs} ({result.best_epoch + 1})", train_s=result.seconds, params=params)
            rows.append(row)
            gathered[name] = got
            run.log(
                f"{DISPLAY[name]}: test MAE {row['mae']:.3f}  MSE {row['mse']:.3f}  (OT: MAE {row['ot_mae']:.3f} "
                f"MSE {row['ot_mse']:.3f} MAPE {row['ot_mape']:.1f}%)"
            )

    paths = {}
    if run.rank == 0:
        with run.stage("report"):
            paths = _write_outputs(run, rows, gathered, splits, config, args, glue)
    else:
        with run.stage("report"):
            pass
    run.finish({"glue": glue, "models": names, "epochs": args.epochs, "quick": args.quick})
    if run.rank == 0:
        print(Path(paths["md"]).read_text(), flush=True)
        run.log(f"tables: {paths['md']} (.csv, .json); plots: {run.out / 'plots'}; timings: {run.out / 'timings.json'}")
    return 0


def _row(model: str, pred: np.ndarray, true: np.ndarray, splits) -> dict:  # type: ignore[no-untyped-def]
    ot_pred, ot_true = splits.ot(pred), splits.ot(true)
    paper = report.PAPER_TABLE3.get(model, (None, None))
    return {
        "model": model,
        "mae": metrics.mae(pred, true),
        "mse": metrics.mse(pred, true),
        "ot_mae": metrics.mae(ot_pred, ot_true),
        "ot_mse": metrics.mse(ot_pred, ot_true),
        "ot_mape": metrics.mape(splits.ot_celsius(ot_pred), splits.ot_celsius(ot_true)),
        "paper_mae": paper[0],
        "paper_mse": paper[1],
    }


def _write_outputs(run: Run, rows, gathered, splits, config: EttConfig, args, glue: str) -> dict:  # type: ignore[no-untyped-def]
    if config.setting == "M":
        what = "all 7 series, each forecast from its own history (channel-independent); MAE/MSE averaged over them"
    else:
        what = f"target OT from {'OT + 6 loads + calendar' if config.inputs == 'all' else 'OT + calendar'}"
    preamble = (
        f"### {config.dataset}, input {config.input_len} -> horizon {config.horizon}, setting {config.setting}: {what}; "
        f"{run.size} ranks, glue {glue}, {args.epochs} epoch(s){' (quick)' if args.quick else ''}\n\n"
        "MAE/MSE on the normalised scale (training-split mean/std), over every test window and step; "
        "MAPE on °C. Paper: Table 3 of Sarker et al. as quoted in issue #8."
    )
    paths = report.write_table(run.out, "metrics", rows, report.ETT_COLUMNS, preamble)
    for name, got in gathered.items():
        plots.forecast_plot(
            run.out / "plots" / f"ett_{name}.png",
            splits.ot_celsius(splits.ot(got.pred)),
            splits.ot_celsius(splits.ot(got.true)),
            config.horizon,
            f"{DISPLAY[name]} on {config.dataset} test set: {config.horizon}-step forecasts of OT",
        )
    return paths


if __name__ == "__main__":
    sys.exit(main())
