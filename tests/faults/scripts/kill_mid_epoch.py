"""DDP (gloo) training over a Deep RC loader; rank 1 SIGKILLs itself in the middle of the first epoch.

``python kill_mid_epoch.py OUT_DIR``: every rank writes ``pid-<rank>``; rank 1 writes ``killed``
(the time) just before it dies. The others keep training until the launcher ends them.
"""

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from deeprc_torch.distributed import init_process_group
from torch import nn

import deeprc_core as drc
from deeprc_torch import loader


def main() -> None:
    out = Path(sys.argv[1])
    wiring = init_process_group("gloo")
    rank = wiring.rank
    (out / f"pid-{rank}").write_text(str(os.getpid()))
    x = np.random.default_rng(rank).random((512, 4), dtype=np.float32)
    table = drc.GlobalTable.from_arrow(pa.table({f"f{i}": x[:, i] for i in range(4)} | {"y": x.sum(1)}))
    model = nn.parallel.DistributedDataParallel(nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    data = loader(table, [f"f{i}" for i in range(4)], "y", 16)
    for epoch in range(10_000):
        data.set_epoch(epoch)
        for step, (xb, yb) in enumerate(data):
            loss = nn.functional.mse_loss(model(xb).squeeze(1), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if rank == 1 and epoch == 0 and step == 5:
                (out / "killed").write_text(repr(time.time()))
                os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.01)


if __name__ == "__main__":
    main()
