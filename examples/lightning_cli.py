"""ETTh1 with LightningCLI: the model and DeepRCDataModule configured from YAML or the command line.

    python examples/lightning_cli.py fit --config examples/lightning_cli.yaml
    python examples/lightning_cli.py fit --config examples/lightning_cli.yaml --data.source data/ett/ETTh1.csv
    torchrun --nproc-per-node 2 examples/lightning_cli.py fit --config examples/lightning_cli.yaml \\
        --trainer.strategy deeprc
    python examples/lightning_cli.py fit --help        # every DataModule argument, with its default

``source`` is a path (CSV, Parquet or Arrow IPC; a file or a folder), read by every rank
inside the job, each its own share. ``--trainer.strategy deeprc`` is DeepRCStrategy under the
name it is registered with in Lightning's strategy registry; Lightning's own ``ddp`` works too.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.cli import LightningCLI
from torch import nn

from deeprc_torch import DeepRCDataModule


class Forecaster(L.LightningModule):
    """An MLP from a window of features to the next ``horizon`` values of the target."""

    def __init__(self, input_len: int = 24, features: int = 7, horizon: int = 6, hidden: int = 64, lr: float = 1e-3):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(input_len * features, hidden), nn.ReLU(), nn.Linear(hidden, horizon)
        )

    def _loss(self, batch: Any) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y.reshape(len(y), -1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch), prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


def main() -> None:
    """Run LightningCLI over Forecaster and DeepRCDataModule."""
    torch.set_num_threads(1)
    LightningCLI(Forecaster, DeepRCDataModule)


if __name__ == "__main__":
    main()
