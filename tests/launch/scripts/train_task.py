"""A 'training/inference' stand-in that reads the join output of its pipeline; plain torch.distributed (gloo)."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rows = sum(int(p.read_text()) for p in Path(sys.argv[1]).glob("part-*.txt"))
t = torch.tensor([float(rows)])
dist.all_reduce(t)
if dist.get_rank() == 0:
    print(f"TRAIN_OK rows={rows} reduced={t.item():g}", flush=True)
dist.destroy_process_group()
