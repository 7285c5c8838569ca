"""Pipeline step 2, inference: a small torch model over the join's output; ranks agree on the row count (gloo).

python examples/launch_infer.py OUT_DIR
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rows = sum(int(p.read_text()) for p in Path(sys.argv[1]).glob("part-*.txt"))
model = torch.nn.Linear(16, 1)
with torch.no_grad():
    model(torch.randn(4096, 16))
t = torch.tensor([float(rows)])
dist.all_reduce(t)
if dist.get_rank() == 0:
    print(f"inferred over {int(t.item()) // dist.get_world_size()} rows", flush=True)
dist.destroy_process_group()
