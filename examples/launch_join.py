"""Pipeline step 1, data engineering: each rank joins its partition of two tables and writes its rows.

python examples/launch_join.py OUT_DIR [ROWS]
"""

import sys
from pathlib import Path

import pyarrow as pa

from deeprc_core import detect_wiring

w = detect_wiring()
out, rows = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
keys = pa.array(range(w.rank, rows, w.world_size))
left = pa.table({"k": keys, "a": pa.array([1.0] * len(keys))})
right = pa.table({"k": keys, "b": pa.array([2.0] * len(keys))})
joined = left.join(right, "k")
out.mkdir(parents=True, exist_ok=True)
(out / f"part-{w.rank}.txt").write_text(str(joined.num_rows))
