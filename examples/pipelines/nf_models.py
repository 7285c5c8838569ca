"""The paper's eleven NeuralForecast models (Table 3), their settings per size, and how each is built.

Every model is ``neuralforecast.models.<Name>`` with input 96 and horizon 96 on all seven ETTh1
series, NeuralForecast's defaults otherwise (loss MAE, its scaler, learning rate and layer
sizes), except what the 2-core budget forces: fewer training steps and fewer windows per step
(:data:`STEPS`, :data:`WINDOWS`), and for the largest attention models a smaller inference
batch (memory). AutoNHITS is the real ``neuralforecast.auto.AutoNHITS`` with the optuna
backend: a small search (:data:`SEARCH_TRIALS` trials over NHITS' pooling, downsampling and
learning rate, drawn from NeuralForecast's own default space) and a refit of the best.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import report

#: Table 3's models, in the paper's order.
PAPER_MODELS = (
    "Autoformer",
    "DeepAR",
    "NLinear",
    "GRU",
    "NBEATS",
    "AutoNHITS",
    "PatchTST",
    "TFT",
    "TimesNet",
    "VanillaTransformer",
    "TiDE",
)

#: The paper's Table 3 figures the project holds (five models, quoted in issue #8): (MAE, MSE).
PAPER_TABLE3 = report.PAPER_TABLE3

SIZES = ("quick", "demo", "paper")

#: Training steps per size. NeuralForecast's defaults are 1,000 (5,000 for NLinear, PatchTST,
#: Autoformer and VanillaTransformer); ``paper`` is what fits 11 models in about an hour on 2
#: quiet cores, all at once in one pilot. The four slowest were measured there (2026-12-07:
#: one hour reached Autoformer 60, DeepAR 300, TimesNet 50, VanillaTransformer 75 steps with
#: the pilot's own processes taking ~0.7 of a CPU, RP's timeout watcher spinning; since fixed),
#: and are set to about what fits.
STEPS: dict[str, dict[str, int]] = {
    "quick": dict.fromkeys(PAPER_MODELS, 8),
    "paper": {
        "Autoformer": 60,
        "DeepAR": 300,
        "NLinear": 2000,
        "GRU": 200,
        "NBEATS": 1000,
        "AutoNHITS": 200,
        "PatchTST": 500,
        "TFT": 120,
        "TimesNet": 50,
        "VanillaTransformer": 100,
        "TiDE": 600,
    },
}
#: the demo size: a quarter of the paper size's steps
STEPS["demo"] = {name: max(10, steps // 4) for name, steps in STEPS["paper"].items()}

#: Windows sampled per training step (global: split over the ranks), at most :data:`WINDOWS_CAP`.
#: NeuralForecast's default is 1,024 for most models.
WINDOWS = {"quick": 32, "demo": 128, "paper": 256}
#: NeuralForecast's own smaller default (GRU 128) and the budget of the costliest models on a CPU
#: (TFT: 23 s a step at 256 windows here; TimesNet: its 2-D inception convolutions, ~4.5 GMAC per window).
WINDOWS_CAP = {"GRU": 128, "TimesNet": 32, "TFT": 64}

#: Layer settings that differ from NeuralForecast's defaults, per size (recorded in each result):
#: TimesNet's convolutions are narrowed and use fewer periods, else it alone would take the hour.
MODEL_KWARGS: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {"TimesNet": {"conv_hidden_size": 8, "top_k": 1}},
    "demo": {"TimesNet": {"conv_hidden_size": 32, "top_k": 3}},
    "paper": {"TimesNet": {"conv_hidden_size": 32, "top_k": 3}},
}

#: AutoNHITS trials per size (each a full NHITS training, then one refit of the best).
SEARCH_TRIALS = {"quick": 2, "demo": 2, "paper": 3}

#: Test windows scored: every ``k``-th of the 2,785 windows per series (each window a 96-step
#: forecast). The literature scores every window (stride 1); predicting all 19,495 windows costs
#: the slow models minutes on a CPU, so ``paper`` scores every 4th (697 per series, every start
#: hour of the day still covered), the demo every 8th and ``quick`` every 96th (non-overlapping).
TEST_STRIDE = {"quick": 96, "demo": 8, "paper": 4}

#: Windows per inference batch for the attention models (memory: 11 tasks share 24 GiB).
INFERENCE_WINDOWS = {"Autoformer": 128, "VanillaTransformer": 256, "PatchTST": 256, "TFT": 256, "TimesNet": 128}


@dataclass(frozen=True)
class ModelPlan:
    """What one task trains: the model, its steps and windows per rank, and the test stride."""

    name: str
    size: str
    steps: int
    windows_per_rank: int
    ranks: int = 1

    @property
    def test_stride(self) -> int:
        """Stride between scored test windows."""
        return TEST_STRIDE[self.size]


def plan(name: str, size: str, ranks: int = 1, steps: int | None = None) -> ModelPlan:
    """The settings of ``name`` at ``size`` on ``ranks`` ranks (the global window batch is kept)."""
    if name not in PAPER_MODELS:
        raise ValueError(f"model {name!r}: choose from {', '.join(PAPER_MODELS)}")
    if size not in SIZES:
        raise ValueError(f"size {size!r}: choose from {', '.join(SIZES)}")
    windows = max(1, min(WINDOWS[size], WINDOWS_CAP.get(name, WINDOWS[size])) // ranks)
    return ModelPlan(name, size, steps if steps is not None else STEPS[size][name], windows, ranks)


def progress_callback(name: str, steps: int) -> Any:
    """A Lightning callback printing rank 0's training progress ten times per fit (long fits show progress)."""
    import pytorch_lightning as pl

    every = max(1, steps // 10)

    class StepProgress(pl.Callback):
        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            step = trainer.global_step
            if trainer.is_global_zero and step % every == 0:
                loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
                print(f"[{name}] step {step}/{steps}, training loss {float(loss):.4f}", flush=True)

    return StepProgress()


def trainer_kwargs(strategy: Any = None, validate: bool = False) -> dict[str, Any]:
    """Lightning Trainer settings for every model: CPU, quiet, no checkpoints; DDP when a strategy is given.

    Without ``validate`` the validation months are held out of training but never scored (no
    early stopping: a validation pass over every window costs DeepAR or TFT minutes on a CPU).
    """
    kwargs: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    if not validate:
        kwargs["limit_val_batches"] = 0
    if strategy is not None:
        # each rank trains on its own series: Lightning must not wrap the loader in a DistributedSampler
        kwargs.update(strategy=strategy, use_distributed_sampler=False)
    return kwargs


def build(p: ModelPlan, horizon: int, input_size: int, seed: int, strategy: Any = None) -> Any:
    """The NeuralForecast model of plan ``p`` (input ``input_size``, horizon ``horizon``)."""
    import neuralforecast.models as nfm

    common: dict[str, Any] = dict(
        h=horizon,
        input_size=input_size,
        max_steps=p.steps,
        val_check_steps=p.steps,
        windows_batch_size=p.windows_per_rank,
        random_seed=seed,
        callbacks=[progress_callback(p.name, p.steps)],
        **trainer_kwargs(strategy),
    )
    common.update(MODEL_KWARGS[p.size].get(p.name, {}))
    if p.name in INFERENCE_WINDOWS:
        common["inference_windows_batch_size"] = INFERENCE_WINDOWS[p.name]
    if p.name == "AutoNHITS":
        return _auto_nhits(p, horizon, input_size, seed, strategy)
    return getattr(nfm, p.name)(**common)


def _auto_nhits(p: ModelPlan, horizon: int, input_size: int, seed: int, strategy: Any) -> Any:
    """AutoNHITS, optuna backend: a few trials from NeuralForecast's default NHITS space, fixed budget."""
    from neuralforecast.auto import AutoNHITS

    fixed = dict(
        input_size=input_size,
        max_steps=p.steps,
        val_check_steps=p.steps,  # one validation pass per trial, at its end: the search ranks trials by it
        windows_batch_size=p.windows_per_rank,
        random_seed=seed,
        **trainer_kwargs(strategy, validate=True),
    )

    def choose(trial: Any, name: str, options: list[list[int]]) -> list[int]:
        got = trial.suggest_categorical(name, list(range(len(options))))  # optuna wants plain choices
        return options[got] if isinstance(got, int) else options[0]  # NeuralForecast's probe returns the list

    def config(trial: Any) -> dict[str, Any]:
        pools = [[2, 2, 1], [1, 1, 1], [2, 2, 2], [4, 4, 4], [8, 4, 1], [16, 8, 1]]
        freqs = [[168, 24, 1], [24, 12, 1], [180, 60, 1], [60, 8, 1], [40, 20, 1], [1, 1, 1]]
        return {
            **fixed,
            "n_pool_kernel_size": choose(trial, "pool", pools),
            "n_freq_downsample": choose(trial, "freq", freqs),
            "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
        }

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return AutoNHITS(
        h=horizon,
        config=config,
        backend="optuna",
        num_samples=SEARCH_TRIALS[p.size],
        search_alg=optuna.samplers.TPESampler(seed=seed),
    )
