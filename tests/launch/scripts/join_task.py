"""A distributed-join stand-in: every rank joins its partition of two tables and writes its row count."""

import sys
from pathlib import Path

import pyarrow as pa

from deeprc_core import detect_wiring

w = detect_wiring()
out = Path(sys.argv[1])
if len(sys.argv) > 2 and sys.argv[2] == "fail" and w.rank == 1:
    raise SystemExit("join failed on purpose")
left = pa.table({"k": list(range(w.rank, 100, w.world_size)), "a": [1.0] * len(range(w.rank, 100, w.world_size))})
right = pa.table({"k": list(range(w.rank, 100, w.world_size)), "b": [2.0] * len(range(w.rank, 100, w.world_size))})
joined = left.join(right, "k")
out.mkdir(parents=True, exist_ok=True)
(out / f"part-{w.rank}.txt").write_text(str(joined.num_rows))
print(f"JOIN_OK rank={w.rank} rows={joined.num_rows}", flush=True)
