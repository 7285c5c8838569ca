"""Read ETTh1.csv on every rank of a job; print each rank's row count and the global mean of OT.

mpirun -np 2 python examples/core_etth1.py [path/to/ETTh1.csv]
torchrun --nproc-per-node 2 examples/core_etth1.py   # (DEEPRC_COMM=tcp without mpi4py)
"""

from __future__ import annotations

import sys
from pathlib import Path

import deeprc_core as drc

if __package__ in (None, ""):  # run as a file (launchers exec scripts): make `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from examples.shipped_data import data_path  # noqa: E402  ($DEEPRC_DATA, else the repo's data/)


def main(path: str | None = None) -> dict[str, float | int]:
    """Read the file as a global table and report this rank's share and the global mean of OT."""
    table = drc.read_csv(path or data_path("ett", "ETTh1.csv"))  # each rank reads only its byte range
    mean, std = table.global_mean_std(["OT"])["OT"]  # one collective; identical on every rank
    print(f"rank {table.rank} of {table.world_size}: {table.local_num_rows} rows; global mean of OT = {mean:.4f}")
    return {"rows": table.local_num_rows, "mean": mean, "num_rows": table.num_rows}


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
