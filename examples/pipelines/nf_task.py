"""One of the paper's NeuralForecast models on ETTh1, as one task: Deep RC prepares the data, the model trains and is scored.

Run by ``examples/pipelines/neuralforecast_models.py`` (eleven of these in one pilot), or alone
with any launcher (every rank runs this whole script)::

    deeprc-launch --ranks 2 examples/pipelines/nf_task.py --model NLinear --size quick
    python examples/pipelines/nf_task.py --model TiDE --size demo --out results/nf

Stages: the global table (:mod:`examples.pipelines.nf_data`: read, normalise with the training
months, long format partitioned by series) -> this rank's series as a NeuralForecast
``TimeSeriesDataset`` (no pandas) -> ``model.fit`` (on 2+ ranks: Lightning DDP through
``DeepRCStrategy``, each rank training on its own series) -> ``model.predict`` of the test
windows of this rank's series -> MAE/MSE (normalised) and MAPE (original units) summed per rank,
combined with the core's allgather -> ``<out>/<model>[-<ranks>ranks].json`` on rank 0.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a file (launchers exec scripts): make `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.pipelines.runtime import limit_threads

limit_threads(1)

import numpy as np  # noqa: E402

import deeprc_core as drc  # noqa: E402
from examples.pipelines import nf_data, nf_models  # noqa: E402
from examples.pipelines.ett_data import EttConfig  # noqa: E402
from examples.pipelines.runtime import Run  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of one model's task."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, choices=nf_models.PAPER_MODELS)
    p.add_argument("--size", default="demo", choices=nf_models.SIZES)
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the size's, see nf_models.STEPS)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=None, help="folder for <model>.json (default results/neuralforecast)")
    return p.parse_args(argv)


def result_name(model: str, ranks: int) -> str:
    """File stem of a model's result: ``NLinear`` on 1 rank, ``NLinear-2ranks`` on 2."""
    return model if ranks == 1 else f"{model}-{ranks}ranks"


def _quiet() -> None:
    """Lightning's and NeuralForecast's per-fit banners would drown the progress lines."""
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def score_sums(data: nf_data.NfData, forecasts: np.ndarray, horizon: int, stride: int) -> dict[str, dict[str, float]]:
    """Per local series: sums of |e|, e² (normalised), |e|/|y| (original units) and counts over the test windows."""
    _, test_size = data.sizes
    n_windows = (test_size - horizon) // stride + 1
    per_series = forecasts.reshape(len(data.series), n_windows, horizon)
    first_target = data.config.borders[1]  # the test months' first row
    sums = {}
    for k, name in enumerate(data.series):
        y = data.y(name)
        windows = drc.sliding_windows(y[first_target:], horizon)[::stride][:n_windows]  # views, no copy
        pred = per_series[k].astype(np.float64)
        err = pred - windows
        mean, std = data.stats[name]
        true_orig = windows * std + mean
        ok = np.abs(true_orig) > 1e-8  # MAPE is undefined at 0
        sums[name] = {
            "abs": float(np.abs(err).sum()),
            "sq": float((err**2).sum()),
            "ape": float((np.abs(err[ok] * std) / np.abs(true_orig[ok])).sum()),
            "n": float(err.size),
            "n_ape": float(ok.sum()),
        }
    return sums


def naive_scores(data: nf_data.NfData, horizon: int, stride: int) -> dict[str, float]:
    """The last-value forecast (each window's last observed value, repeated) scored like the models."""
    _, test_size = data.sizes
    n_windows = (test_size - horizon) // stride + 1
    first_target = data.config.borders[1]
    last = [data.y(name)[first_target - 1 : first_target - 1 + n_windows * stride : stride] for name in data.series]
    forecasts = np.repeat(np.stack(last)[:, :, None], horizon, axis=2).reshape(-1)
    return combine([score_sums(data, forecasts, horizon, stride)])


def combine(parts: list[dict[str, dict[str, float]]]) -> dict[str, float]:
    """MAE, MSE and MAPE over every series and window, plus OT's, from the ranks' sums."""
    series = {name: s for part in parts for name, s in part.items()}
    total = {k: sum(s[k] for s in series.values()) for k in ("abs", "sq", "ape", "n", "n_ape")}
    ot = series[nf_data.SERIES[0]]
    return {
        "mae": total["abs"] / total["n"],
        "mse": total["sq"] / total["n"],
        "mape": 100.0 * total["ape"] / total["n_ape"],
        "ot_mae": ot["abs"] / ot["n"],
        "ot_mse": ot["sq"] / ot["n"],
        "series": float(len(series)),
        "scored_points": total["n"],
    }


def main(argv: list[str] | None = None) -> int:
    """Train, predict and score one model on this rank (every rank calls it)."""
    args = parse_args(argv)
    _quiet()
    t0 = time.perf_counter()
    import neuralforecast.models  # noqa: F401  (torch, Lightning, ray.tune: seconds; timed apart from the stages)
    import torch

    import_s = time.perf_counter() - t0
    torch.set_num_threads(1)
    run = Run("neuralforecast", args.out)
    name = result_name(args.model, run.size)
    config = EttConfig("ETTh1", 96, 96, "M")
    plan = nf_models.plan(args.model, args.size, run.size, args.steps)
    run.log(
        f"{args.model}: {run.size} rank(s), {plan.steps} steps of {plan.windows_per_rank} windows per rank, "
        f"input {config.input_len} -> horizon {config.horizon}, size {args.size}"
    )
    with drc.counting_copies() as copies:
        with run.stage("prepare"):
            data = nf_data.prepare(config, run.comm)
            dataset = nf_data.to_dataset(data)
    run.log(f"rank {run.rank}: series {', '.join(data.series)} ({data.indptr[-1]} rows)", every_rank=True)
    strategy = None
    if run.size > 1:
        from deeprc_torch.pl import DeepRCStrategy  # NeuralForecast builds a pytorch_lightning Trainer

        strategy = DeepRCStrategy()
    model = nf_models.build(plan, config.horizon, config.input_len, args.seed, strategy)
    val_size, test_size = data.sizes
    t0 = time.perf_counter()
    with run.stage("train"):
        model.fit(dataset, val_size=val_size, test_size=test_size)
    train_s = time.perf_counter() - t0
    fitted = getattr(model, "model", model)  # AutoNHITS keeps the refitted best model here
    if strategy is not None:
        fitted.trainer_kwargs = nf_models.trainer_kwargs()  # each rank predicts its own series, no DDP
    t0 = time.perf_counter()
    with run.stage("predict"):
        model.set_test_size(test_size)
        got = np.asarray(model.predict(dataset, step_size=plan.test_stride))
        # one column per output: the point forecast first (DeepAR adds its median and intervals)
        forecasts = got[:, 0] if got.ndim == 2 else got
    predict_s = time.perf_counter() - t0
    sums = score_sums(data, forecasts, config.horizon, plan.test_stride)
    parts = run.comm.allgather(sums)
    scores = combine(parts)
    params = sum(p.numel() for p in fitted.parameters())
    best = getattr(model, "results", None)
    result = {
        "model": args.model,
        "ranks": run.size,
        "size": args.size,
        "steps": plan.steps,
        "windows_per_rank": plan.windows_per_rank,
        "model_kwargs": nf_models.MODEL_KWARGS[args.size].get(args.model, {}),
        "test_stride": plan.test_stride,
        "seed": args.seed,
        "params": params,
        "import_s": import_s,
        "train_s": train_s,
        "predict_s": predict_s,
        "series_per_rank": [len(p) for p in parts],
        "copies": {"count": copies.count, "bytes": copies.nbytes},
        "stages_s": run.timings,
        **scores,
    }
    if best is not None and hasattr(best, "best_trial"):
        result["search"] = {"trials": len(best.trials), "best": best.best_trial.params}
    run.log(
        f"{args.model}: test MAE {scores['mae']:.3f}  MSE {scores['mse']:.3f}  MAPE {scores['mape']:.1f}%  "
        f"(train {train_s:.0f} s, predict {predict_s:.0f} s, {params} parameters)"
    )
    if run.rank == 0:
        run.out.mkdir(parents=True, exist_ok=True)
    run.write_json(f"{name}.json", result)  # eleven tasks share the folder: no timings.json of its own
    return 0


if __name__ == "__main__":
    sys.exit(main())
