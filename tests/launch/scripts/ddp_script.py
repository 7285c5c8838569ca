"""Tiny Lightning DDP (gloo) training on random data; prints the synced loss on rank 0."""

import os

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from deeprc_core import detect_wiring


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 1)

    def training_step(self, batch, _idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("loss", loss, sync_dist=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main() -> None:
    w = detect_wiring()
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=w.local_world_size,
        num_nodes=w.num_nodes,
        strategy="ddp",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=os.environ.get("DEEPRC_LOG_DIR"),
    )
    trainer.fit(Tiny(), data)
    world = torch.distributed.get_world_size()
    if trainer.global_rank == 0:
        loss = float(trainer.callback_metrics["loss"])
        print(f"DDP_OK world={world} backend={torch.distributed.get_backend()} loss={loss:.4f}")


if __name__ == "__main__":
    main()
