"""Training glue for the torch models: Lightning with Deep RC's DataModule and Strategy.

Two interchangeable ways to train a model data-parallel on the job's ranks:

``lightning`` (the default when deeprc-torch is installed)
    ``Trainer(strategy=DeepRCStrategy())`` + ``DeepRCDataModule`` over the prepared
    global tables — the path the paper's pipeline runs.
``core``
    A plain torch loop over the core's :class:`~deeprc_core.TableBatches`, with torch's
    ``DistributedDataParallel`` on deeprc-torch's process group (the library's DDP path)
    on several ranks; on one rank it needs nothing but torch.

Both start every rank from rank 0's weights, shuffle each rank's windows per epoch, score
the validation windows after every epoch (mean over all ranks' windows) and end with the
weights of the best validation epoch.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

import deeprc_core as drc

Log = Callable[[str], None]


@dataclass
class TrainConfig:
    """How to train one model."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    #: train on windows starting every ``train_stride`` rows (1 = all; larger = quicker)
    train_stride: int = 1


@dataclass
class TrainResult:
    """What training reports: per-epoch validation loss, the best epoch and the wall time."""

    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = -1
    seconds: float = 0.0
    glue: str = ""


def lightning_available() -> bool:
    """True when deeprc-torch (and Lightning) can be imported."""
    return importlib.util.find_spec("deeprc_torch") is not None and importlib.util.find_spec("lightning") is not None


def resolve_glue(glue: str) -> str:
    """``auto`` -> ``lightning`` where deeprc-torch is installed, else ``core``."""
    if glue == "auto":
        return "lightning" if lightning_available() else "core"
    if glue not in ("lightning", "core"):
        raise ValueError(f"glue={glue!r}: choose auto, lightning or core")
    return glue


def _names(cols: str | Sequence[str]) -> str | list[str]:
    return cols if isinstance(cols, str) else list(cols)


def _flat_target(y: torch.Tensor) -> torch.Tensor:
    return y.reshape(y.shape[0], -1)


def sync_initial_weights(model: nn.Module, comm: drc.Communicator) -> None:
    """Give every rank rank 0's initial weights (collective)."""
    state = comm.bcast({k: v.detach().cpu().numpy() for k, v in model.state_dict().items()} if comm.rank == 0 else None)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})


def train(
    glue: str,
    model: nn.Module,
    train_table: drc.GlobalTable,
    val_table: drc.GlobalTable,
    features: Sequence[str],
    target: str | Sequence[str],
    window: drc.Window,
    config: TrainConfig,
    log: Log,
) -> TrainResult:
    """Train ``model`` on every rank with the chosen glue; returns with the best weights loaded (collective)."""
    glue = resolve_glue(glue)
    start = time.perf_counter()
    sync_initial_weights(model, train_table.comm)
    if glue == "lightning":
        result = _train_lightning(model, train_table, val_table, features, target, window, config, log)
    else:
        result = _train_core(model, train_table, val_table, features, target, window, config, log)
    result.seconds = time.perf_counter() - start
    result.glue = glue
    return result


def _train_window(window: drc.Window, stride: int) -> drc.Window:
    return drc.Window(window.input_len, window.horizon, max(stride, 1), window.offset, window.group)


# --------------------------------------------------------------------------- core
def _data_parallel(model: nn.Module, comm: drc.Communicator) -> nn.Module:
    """``model`` under torch's DistributedDataParallel on deeprc-torch's process group; itself on one rank.

    The library's DDP path (the one DeepRCStrategy uses): gradients are averaged by DDP's
    bucketed all-reduce, not by hand.
    """
    if comm.size == 1:
        return model
    try:
        from deeprc_torch.distributed import init_process_group
    except ImportError:
        raise RuntimeError(
            f"glue='core' on {comm.size} ranks averages gradients with DDP over deeprc-torch's process group: "
            "install deeprc-torch (pip install deeprc-torch), or run on one rank"
        ) from None
    init_process_group()
    return nn.parallel.DistributedDataParallel(model)


def _val_loss(model: nn.Module, batches: drc.TableBatches, comm: drc.Communicator) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for b in batches.epoch(0):
            keep = slice(None) if b.padded is None else torch.from_numpy(~b.padded)
            err = (
                model(torch.from_numpy(np.ascontiguousarray(b.x)))
                - _flat_target(torch.from_numpy(np.ascontiguousarray(b.y)))
            ) ** 2
            err = err[keep]
            total += float(err.sum())
            count += int(err.numel())
    model.train()
    parts = comm.allgather((total, count))
    return sum(p[0] for p in parts) / max(sum(p[1] for p in parts), 1)


def _train_core(
    model: nn.Module,
    train_table: drc.GlobalTable,
    val_table: drc.GlobalTable,
    features: Sequence[str],
    target: str | Sequence[str],
    window: drc.Window,
    config: TrainConfig,
    log: Log,
) -> TrainResult:
    comm = train_table.comm
    tb = drc.TableBatches(
        train_table,
        list(features),
        _names(target),
        config.batch_size,
        window=_train_window(window, config.train_stride),
        shuffle=True,
        seed=config.seed,
        what="train windows",
    )
    vb = drc.TableBatches(val_table, list(features), _names(target), 256, window=window, even="pad", what="val windows")
    ddp = _data_parallel(model, comm)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    result = TrainResult()
    best: dict[str, Any] | None = None
    model.train()
    for epoch in range(config.epochs):
        t0 = time.perf_counter()
        losses = []
        for b in tb.epoch(epoch):
            opt.zero_grad(set_to_none=True)
            x = torch.from_numpy(np.ascontiguousarray(b.x))
            y = _flat_target(torch.from_numpy(np.ascontiguousarray(b.y)))
            loss = nn.functional.mse_loss(ddp(x), y)
            loss.backward()  # DDP all-reduces the gradients here
            opt.step()
            losses.append(loss.item())
        val = _val_loss(model, vb, comm)
        result.val_loss.append(val)
        if best is None or val < min(result.val_loss[:-1], default=float("inf")):
            best, result.best_epoch = copy.deepcopy(model.state_dict()), epoch
        log(
            f"  epoch {epoch + 1}/{config.epochs}: {tb.num_batches} batches/rank, train mse {np.mean(losses):.4f}, "
            f"val mse {val:.4f} ({time.perf_counter() - t0:.1f} s)"
        )
    if best is not None:
        model.load_state_dict(best)
    model.eval()
    return result


# ---------------------------------------------------------------------- lightning
def _train_lightning(
    model: nn.Module,
    train_table: drc.GlobalTable,
    val_table: drc.GlobalTable,
    features: Sequence[str],
    target: str | Sequence[str],
    window: drc.Window,
    config: TrainConfig,
    log: Log,
) -> TrainResult:
    import lightning as L

    from deeprc_torch import DeepRCDataModule, DeepRCStrategy

    # Keep the job's output to our progress lines: Lightning's banners and tips repeat for every model.
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")

    result = TrainResult()

    class Forecaster(L.LightningModule):
        """The network with an MSE loss and Adam."""

        def __init__(self) -> None:
            super().__init__()
            self.net = model
            self.best: dict[str, Any] | None = None
            self.t0 = time.perf_counter()
            self.train_losses: list[float] = []

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch[0], batch[1]
            loss = nn.functional.mse_loss(self.net(x), _flat_target(y))
            self.train_losses.append(float(loss.detach()))
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch[0], batch[1]
            loss = nn.functional.mse_loss(self.net(x), _flat_target(y))
            self.log("val_loss", loss, sync_dist=True, on_epoch=True, batch_size=len(x))

        def on_validation_epoch_end(self) -> None:
            if self.trainer.sanity_checking:
                return
            val = float(self.trainer.callback_metrics["val_loss"])
            epoch = self.current_epoch
            if not result.val_loss or val < min(result.val_loss):
                self.best, result.best_epoch = copy.deepcopy(self.net.state_dict()), epoch
            result.val_loss.append(val)
            log(
                f"  epoch {epoch + 1}/{config.epochs}: train mse {np.mean(self.train_losses or [np.nan]):.4f}, "
                f"val mse {val:.4f} ({time.perf_counter() - self.t0:.1f} s)"
            )
            self.train_losses, self.t0 = [], time.perf_counter()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.net.parameters(), lr=config.lr)

    data = DeepRCDataModule(
        train_table,
        list(features),
        _names(target),
        config.batch_size,
        val=val_table,
        window=_train_window(window, config.train_stride),
        eval_window=window,  # validation scores every window, whatever the training stride
        shuffle=True,
        seed=config.seed,
        eval_batch_size=256,
    )
    module = Forecaster()
    trainer = L.Trainer(
        accelerator="cpu",
        strategy=DeepRCStrategy(),
        max_epochs=config.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=data)
    if module.best is not None:
        model.load_state_dict(module.best)
    model.eval()
    return result
