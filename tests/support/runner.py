"""Runs one rank of a multi-rank test: ``python -m tests.support.runner FILE FUNC OUTDIR``.

Imports FUNC from the test file, calls it, and writes its (pickled) return value to
OUTDIR/rank-<r>.pkl. An exception prints its traceback to stderr and exits 1, so the
parent reports that rank's stderr.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import sys
import traceback
from pathlib import Path


def _rank_from_env() -> int:
    for name in ("DEEPRC_RANK", "RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"):
        if os.environ.get(name, "") != "":
            return int(os.environ[name])
    return 0


def main() -> None:
    path, func_name, outdir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    args = sys.argv[4:]
    rank = _rank_from_env()
    spec = importlib.util.spec_from_file_location(f"_rank_body_{rank}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(Path(path).parent))
    spec.loader.exec_module(module)
    try:
        result = getattr(module, func_name)(*args)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    (outdir / f"rank-{rank}.pkl").write_bytes(pickle.dumps(result))
    sys.stdout.flush()
    sys.stderr.flush()


if __name__ == "__main__":
    main()
