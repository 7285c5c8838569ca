"""A trivial 2-rank torch.distributed (gloo) job: the benchmark's unit of work.

Runs unchanged under ``torchrun --nproc-per-node 2``, ``mpirun -np 2 python`` (reads Open MPI's
variables through deeprc_core) and ``deeprc-launch --ranks 2``.
"""

import os

import torch
import torch.distributed as dist

from deeprc_core import detect_wiring

w = detect_wiring()
os.environ.setdefault("MASTER_ADDR", w.master_addr or "127.0.0.1")
os.environ.setdefault("MASTER_PORT", str(w.master_port or 29512))
dist.init_process_group("gloo", rank=w.rank, world_size=w.world_size)
t = torch.ones(1) * (w.rank + 1)
dist.all_reduce(t)
if w.rank == 0:
    print(f"allreduce {t.item():g}", flush=True)
dist.destroy_process_group()
