"""Per-rank runtime of a pipeline: the communicator, rank-0 progress lines and stage timings."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import deeprc_core as drc

REPO = Path(__file__).resolve().parents[2]
#: Run outputs (git-ignored).
RESULTS = REPO / "results"


def limit_threads(threads: int = 1) -> None:
    """Keep every rank to ``threads`` CPU threads (the machines here are small and shared).

    Set before numpy/torch/TensorFlow create their pools: the env variables cover OpenMP,
    MKL and TensorFlow's pools; torch is also told directly when it is already imported.
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ.setdefault(var, str(threads))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)


class Run:
    """One rank's view of a pipeline run: communicator, output folder, progress and timings."""

    def __init__(self, name: str, out_dir: str | os.PathLike[str] | None = None) -> None:
        self.name = name
        self.comm = drc.get_communicator()
        self.rank, self.size = self.comm.rank, self.comm.size
        self.out = Path(out_dir) if out_dir else RESULTS / name
        if self.rank == 0:
            (self.out / "plots").mkdir(parents=True, exist_ok=True)
        self.t0 = time.perf_counter()
        self.timings: dict[str, float] = {}

    def log(self, msg: str, every_rank: bool = False) -> None:
        """A progress line from rank 0 (or from every rank), with the seconds since the start."""
        if every_rank or self.rank == 0:
            print(f"[{self.name} rank {self.rank} {time.perf_counter() - self.t0:7.1f}s] {msg}", flush=True)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage; ranks meet at its end so the time is the slowest rank's."""
        start = time.perf_counter()
        yield
        self.comm.barrier()
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
        self.log(f"stage {name}: {time.perf_counter() - start:.1f} s")

    def write_json(self, filename: str, obj: Any) -> Path:
        """Write ``obj`` as JSON into the output folder (rank 0 only); return the path."""
        path = self.out / filename
        if self.rank == 0:
            path.write_text(json.dumps(obj, indent=2, default=float) + "\n")
        return path

    def finish(self, extra: dict[str, Any] | None = None) -> Path:
        """Write the stage timings (plus ``extra``) to timings.json; return its path."""
        total = time.perf_counter() - self.t0
        info = {"ranks": self.size, "communicator": self.comm.kind, "stages_s": self.timings, "total_s": total}
        info.update(extra or {})
        return self.write_json("timings.json", info)
