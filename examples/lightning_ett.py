"""Forecast ETTh1 oil temperature with Lightning, data served by Deep RC.

An ordinary Lightning script; the two Deep RC lines are marked. Run it on one process,
or on several with any launcher:

    python examples/lightning_ett.py
    torchrun --nproc-per-node 2 examples/lightning_ett.py
    mpirun -np 2 python examples/lightning_ett.py
    deeprc-launch -n 2 examples/lightning_ett.py

Each rank reads only its share of the CSV, normalises with global statistics and trains
on 24-hour windows predicting the next 6 hours. DDP keeps the weights identical on every
rank; every training window is seen once per epoch across the ranks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lightning as L
import pyarrow.compute as pc
import torch
from torch import nn

import deeprc_core as dc
from deeprc_torch import DeepRCDataModule, DeepRCStrategy

if __package__ in (None, ""):  # run as a file (launchers exec scripts): make `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from examples.shipped_data import data_path  # noqa: E402  ($DEEPRC_DATA, else the repo's data/)

FEATURES = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
TARGET = "OT"
INPUT_LEN, HORIZON = 24, 6


def load_ett() -> dc.GlobalTable:
    """ETTh1 normalised with global mean/std; runs on every rank inside the job."""
    table = dc.read_csv(data_path("ett", "ETTh1.csv"))
    stats = table.global_mean_std(FEATURES)
    for c in FEATURES:
        mean, std = stats[c]
        table = table.with_column(c, pc.divide(pc.subtract(table.local.column(c), mean), std))
    return table


class Forecaster(L.LightningModule):
    """A small MLP over a flattened window: (B, 24, 7) -> (B, 6)."""

    def __init__(self, lr: float = 1e-3) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(INPUT_LEN * len(FEATURES), 64), nn.ReLU(), nn.Linear(64, HORIZON)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch  # (B, 24, 7), (B, 6, 1)
        loss = nn.functional.mse_loss(self(x), y.squeeze(-1))
        self.log("train_loss", loss, prog_bar=True, sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y.squeeze(-1)), prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    L.seed_everything(0)
    data = DeepRCDataModule(  # Deep RC line 1: the data
        load_ett,
        FEATURES,
        TARGET,
        args.batch_size,
        split=(0.7, 0.1, 0.2),
        window=(INPUT_LEN, HORIZON),
        even="rebalance",
        shuffle=True,
        seed=0,
    )
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="auto",
        strategy=DeepRCStrategy(),  # Deep RC line 2: DDP wired by whichever launcher started the job
        logger=False,
        enable_checkpointing=False,
    )
    trainer.fit(Forecaster(), datamodule=data)
    if trainer.is_global_zero:
        print(f"done: {trainer.world_size} rank(s), val_loss {float(trainer.callback_metrics['val_loss']):.4f}")


if __name__ == "__main__":
    main()
