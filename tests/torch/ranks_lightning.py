"""Rank bodies for the multi-process Lightning tests (run by tests.support.ranks.run_ranks).

Each body builds a real Trainer with DeepRCStrategy and DeepRCDataModule on ETTh1 and
returns what the test compares across ranks: final weights, the global row ids each
training step saw, and a few facts about the wiring.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

import deeprc_core as dc
from examples.shipped_data import data_path

ETT = data_path("ett", "ETTh1.csv")
FEATURES = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL"]
TARGET = "OT"
SPLIT = (0.7, 0.1, 0.2)
BATCH = 64

torch.set_num_threads(1)


def flavour(name: str) -> tuple[Any, Any]:
    """(Lightning package, deeprc_torch flavour module) for 'lightning' or 'pytorch_lightning'."""
    if name == "lightning":
        return importlib.import_module("lightning.pytorch"), importlib.import_module("deeprc_torch.lit")
    return importlib.import_module("pytorch_lightning"), importlib.import_module("deeprc_torch.pl")


def ett_table() -> dc.GlobalTable:
    """ETTh1, features and target normalised with global statistics (runs on every rank)."""
    table = dc.read_csv(ETT)
    stats = table.global_mean_std([*FEATURES, TARGET])
    for c in [*FEATURES, TARGET]:
        mean, std = stats[c]
        table = table.with_column(c, pc.divide(pc.subtract(table.local.column(c), mean), std))
    return table


def make_model(pl: Any, fail_rank: int | None = None, fail_at: int = 3) -> Any:
    """A small MLP that records the global row ids of every training batch."""

    class Model(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
            self.seen: list[list[int]] = []

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y, index = batch
            if fail_rank is not None and self.global_rank == fail_rank and batch_idx == fail_at:
                raise RuntimeError(f"deliberate failure on rank {self.global_rank} at batch {batch_idx}")
            self.seen.append(index.tolist())
            return torch.nn.functional.mse_loss(self.net(x).squeeze(-1), y)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y, _ = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.net(x).squeeze(-1), y), sync_dist=True)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    return Model()


def make_trainer(pl: Any, flav: Any, **kwargs: Any) -> Any:
    """A quiet CPU Trainer, with DeepRCStrategy unless ``strategy=`` says otherwise (use_distributed_sampler left at its default)."""
    options: dict[str, Any] = dict(
        accelerator="cpu",
        strategy=kwargs.pop("strategy", None) or flav.DeepRCStrategy(),
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    options.update(kwargs)
    return pl.Trainer(**options)


def make_datamodule(flav: Any, **kwargs: Any) -> Any:
    """The DataModule under test: ETTh1 split 70/10/20 by row order, rebalanced, with row ids."""
    options: dict[str, Any] = dict(split=SPLIT, even="rebalance", shuffle=True, seed=7, return_index=True)
    options.update(kwargs)
    return flav.DeepRCDataModule(ett_table, FEATURES, TARGET, BATCH, **options)


def weights(model: Any) -> dict[str, np.ndarray]:
    """The model's parameters as numpy arrays."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def train(name: str = "lightning") -> dict[str, Any]:
    """One epoch of DDP training; returns weights, seen row ids and wiring facts."""
    pl, flav = flavour(name)
    model = make_model(pl)
    dm = make_datamodule(flav)
    trainer = make_trainer(pl, flav)
    trainer.fit(model, datamodule=dm)
    env = trainer.strategy.cluster_environment
    loader = dm._train_loader
    return {
        "weights": weights(model),
        "seen": model.seen,
        "num_batches": len(loader),
        "train_rows": dm.tables["train"].num_rows,
        "local_rows": dm.tables["train"].local_num_rows,
        "comm": dm.tables["train"].comm.kind,
        "world_size": trainer.world_size,
        "global_rank": trainer.global_rank,
        "local_rank": env.local_rank(),
        "node_rank": env.node_rank(),
        "backend": torch.distributed.get_backend(),
        "val_loss": float(trainer.callback_metrics["val_loss"]),
        "sampler": type(loader.sampler).__name__,
        "state": dm.state_dict(),
    }


def train_and_resume(name: str = "pytorch_lightning", stop_after: int = 5) -> dict[str, Any]:
    """Train, then: stop after ``stop_after`` batches with a checkpoint, resume from it, finish the epoch."""
    result = train(name)
    pl, flav = flavour(name)
    ckdir = Path(os.environ.get("DEEPRC_TEST_CKPT", tempfile.gettempdir())) / "ckpt"
    # Run 1: a checkpoint after `stop_after` steps, then stop (as a job killed mid-epoch would).
    ckpt_cb = pl.callbacks.ModelCheckpoint(dirpath=ckdir, every_n_train_steps=stop_after, save_top_k=-1)
    first = make_model(pl)
    trainer = make_trainer(pl, flav, max_steps=stop_after, enable_checkpointing=True, callbacks=[ckpt_cb], max_epochs=2)
    dm1 = make_datamodule(flav, seed=11)
    trainer.fit(first, datamodule=dm1)
    path = sorted(ckdir.glob("*.ckpt"))[-1]
    # Run 2: a fresh process state (new model, DataModule, Trainer) resumed from the checkpoint.
    second = make_model(pl)
    dm2 = make_datamodule(flav, seed=11)
    trainer2 = make_trainer(pl, flav, max_epochs=1)
    trainer2.fit(second, datamodule=dm2, ckpt_path=str(path))
    # The uninterrupted epoch 0 for comparison, from the same plan.
    full = [b[2].tolist() for b in _epoch_batches(dm2)]
    result.update(first_part=first.seen, resumed=second.seen, full=full, ckpt_state=_datamodule_state(path))
    result["resumed_weights"] = weights(second)
    return result


def _epoch_batches(dm: Any) -> list[Any]:
    loader = dm.train_dataloader()
    loader.set_epoch(0)
    return list(loader)


def _datamodule_state(path: Path) -> Any:
    ckpt = torch.load(path, weights_only=False)
    return ckpt.get("DeepRCDataModule")


def fail_in_step(name: str = "lightning") -> None:
    """Rank 1 raises in training_step; every rank must exit non-zero."""
    pl, flav = flavour(name)
    model = make_model(pl, fail_rank=1, fail_at=3)
    trainer = make_trainer(pl, flav, strategy=flav.DeepRCStrategy(timeout=float(os.environ["DEEPRC_COMM_TIMEOUT"])))
    trainer.fit(model, datamodule=make_datamodule(flav))


def predict_in_order(root: str) -> dict[str, Any]:
    """trainer.predict over an uneven predict table with GatherPredictions: every row once, in global order."""
    pl, flav = flavour("lightning")
    comm = dc.get_communicator()
    rows = [50, 13, 31][comm.rank]  # uneven partitions; batch 16 pads ranks 1 and 2
    start = sum([50, 13, 31][: comm.rank])
    feats = {f: np.arange(start, start + rows, dtype=np.float32) * (j + 1) for j, f in enumerate(FEATURES)}
    table = dc.GlobalTable.from_arrow(pa.table(feats), comm)

    class Doubler(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(len(FEATURES)))

        def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return batch @ self.w  # no target in the predict table: the batch is x alone

    gather = flav.GatherPredictions(root=None if root == "all" else int(root))
    dm = flav.DeepRCDataModule(table, FEATURES, None, 64, eval_batch_size=16, predict=table)
    trainer = make_trainer(pl, flav, callbacks=[gather])
    steps = trainer.predict(Doubler(), datamodule=dm)
    got = gather.predictions
    return {
        "steps": len(steps),
        "index": None if got is None else got.index,
        "pred": None if got is None else got.pred,
    }
