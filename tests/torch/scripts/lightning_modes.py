"""A user's Lightning script, launched the ways Lightning users launch (tests/torch/test_launch_modes.py).

    python lightning_modes.py OUT STRATEGY [DEVICES] [RANKS]

STRATEGY is ``deeprc`` (DeepRCStrategy), ``ddp``, ``ddp_spawn`` or ``default`` (no strategy:
Lightning's choice for one CPU device). The DataModule is the documented default with
``split=(0.8, 0.2)`` over the first ROWS rows of ETTh1, and nothing else chosen (no ``even=``).
Each process that trains writes ``OUT/rank<global rank>.json``: the split-relative ids of the
training and validation samples it saw, the first feature of each validation sample, and
what the Trainer and the tables said about the ranks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import deeprc_torch.lit
import lightning.pytorch as L
import torch

import deeprc_core as dc
from deeprc_torch import DeepRCDataModule, DeepRCStrategy
from tests.torch.ranks_lightning import make_trainer  # the tests' quiet CPU Trainer (PYTHONPATH holds the repo)

REPO = Path(__file__).resolve().parents[3]
ETT = REPO / "data" / "ett" / "ETTh1.csv"
FEATURES = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL"]
ROWS = 3000
BATCH = 64

torch.set_num_threads(1)


def first_rows() -> dc.GlobalTable:
    """The first ROWS rows of ETTh1 (read on every rank, each its byte range)."""
    return dc.read_csv(ETT).slice_rows(0, ROWS)


class Recorder(L.LightningModule):
    """A linear model that records the sample ids of every batch it sees."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(len(FEATURES), 1)
        self.train_ids: list[int] = []
        self.val_ids: list[int] = []
        self.val_first: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, index = batch
        self.train_ids += index.tolist()
        return torch.nn.functional.mse_loss(self.net(x).squeeze(-1), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y, index = batch
        self.val_ids += index.tolist()
        self.val_first += x[:, 0].tolist()

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def on_fit_end(self) -> None:
        trainer, dm = self.trainer, self.trainer.datamodule
        result = {
            "train_ids": self.train_ids,
            "val_ids": self.val_ids,
            "val_first": self.val_first,
            "world_size": trainer.world_size,
            "global_rank": trainer.global_rank,
            "strategy": type(trainer.strategy).__name__,
            "table_world": dm.tables["train"].world_size,
            "train_local_rows": dm.batches["train"].table.local_num_rows,
            "val_local_rows": dm.batches["val"].table.local_num_rows,
            "even": dm.batches["train"].even,
        }
        Path(sys.argv[1], f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


def main() -> None:
    strategy_name = sys.argv[2]
    devices = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    # "deeprc_name": the name DeepRCStrategy is registered under in Lightning's strategy registry
    strategy: Any = {"deeprc": DeepRCStrategy(), "default": "auto", "deeprc_name": "deeprc"}.get(
        strategy_name, strategy_name
    )
    trainer = make_trainer(L, deeprc_torch.lit, devices=devices, strategy=strategy)
    data = DeepRCDataModule(first_rows, FEATURES, "OT", BATCH, split=(0.8, 0.2), return_index=True, seed=3)
    trainer.fit(Recorder(), datamodule=data)


if __name__ == "__main__":
    main()
