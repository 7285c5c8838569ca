"""ETTh1 with a plain PyTorch DDP loop and Deep RC batches.

torchrun --nproc-per-node 2 examples/torch_ett.py
mpirun -np 2 python examples/torch_ett.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

import deeprc_core as dc
import deeprc_torch as dt

if __package__ in (None, ""):  # run as a file (launchers exec scripts): make `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from examples.shipped_data import data_path  # noqa: E402  ($DEEPRC_DATA, else the repo's data/)

FEATURES = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL"]


def main() -> None:
    torch.set_num_threads(1)
    wiring = dt.init_process_group()  # gloo on CPU, nccl on GPUs; any launcher
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    table = dc.read_csv(data_path("ett", "ETTh1.csv"))  # each rank reads its share, over the torch communicator
    loader = dt.loader(table, FEATURES, "OT", 128, shuffle=True, even="rebalance", device=device)
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(nn.Linear(len(FEATURES), 1).to(device))
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    for epoch in range(2):
        loader.set_epoch(epoch)  # a new shuffle per epoch, the same on every run
        total = torch.zeros(2, device=device)
        for x, y in loader:
            x, y = x.to(device), y.to(device)  # no-ops when the loader staged them on the GPU already
            loss = nn.functional.mse_loss(model(x).squeeze(-1), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += torch.stack([loss.detach() * len(y), torch.tensor(float(len(y)), device=device)])
        dist.all_reduce(total)
        if wiring.is_main:
            print(
                f"epoch {epoch}: mse {float(total[0] / total[1]):.3f} over {int(total[1])} rows on {wiring.world_size} ranks"
            )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
