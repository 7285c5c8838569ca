"""Lightning DDP on random data, wired by deeprc-launch.

    deeprc-launch --ranks 2 examples/launch_lightning.py            # this machine, gloo
    deeprc-launch --nodes 2 --ranks-per-node 4 --gpus-per-rank 1 \\
        --resource ornl.frontier --project ABC123 examples/launch_lightning.py   # NCCL on a cluster

The script only asks deeprc_core for the wiring (devices per node, nodes); deeprc-launch set the
variables Lightning reads (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT, ...).
"""

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from deeprc_core import detect_wiring


class Regressor(L.LightningModule):
    """A linear model learning y = sum(x)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(8, 1)

    def training_step(self, batch, _idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("loss", loss, sync_dist=True, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def main() -> None:
    wiring = detect_wiring()
    torch.manual_seed(0)
    x = torch.randn(512, 8)
    loader = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=32)
    trainer = L.Trainer(
        accelerator="gpu" if torch.cuda.is_available() else "cpu",
        devices=wiring.local_world_size,
        num_nodes=wiring.num_nodes,
        strategy="ddp",
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(Regressor(), loader)
    if trainer.global_rank == 0:
        print(f"rank 0 of {wiring.world_size}: final loss {float(trainer.callback_metrics['loss']):.4f}")


if __name__ == "__main__":
    main()
