"""Prints what deeprc_core.detect_wiring() and the conventional variables say on this rank (one JSON line)."""

import json
import os
import sys

from deeprc_core import detect_wiring

w = detect_wiring()
names = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "NODE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TF_CONFIG",
    "CUDA_VISIBLE_DEVICES",
    "DEEPRC_BACKEND",
    "DEEPRC_HOSTS",
    "EXTRA",
)
out = {
    "rank": w.rank,
    "world": w.world_size,
    "local_rank": w.local_rank,
    "local_world": w.local_world_size,
    "node_rank": w.node_rank,
    "master_addr": w.master_addr,
    "master_port": w.master_port,
    "source": w.source,
    "env": {n: os.environ.get(n) for n in names},
    "argv": sys.argv[1:],
}
print(json.dumps(out), flush=True)
if os.environ.get("FAIL_RANK") == str(w.rank):
    print(f"rank {w.rank} fails on purpose", file=sys.stderr)
    sys.exit(3)
