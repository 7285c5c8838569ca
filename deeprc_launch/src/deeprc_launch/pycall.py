"""Runs a pickled callable on one rank: ``python -m deeprc_launch.pycall <run dir>/call.pkl``.

Used by :meth:`deeprc_launch.Launcher.submit` for Python-function tasks (no Raptor needed: the
function runs as an ordinary rank process, wired like any script). The return value is
pickled to ``result-<rank>.pkl`` next to the payload.
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

from deeprc_core.wiring import detect_wiring


def main(argv: list[str] | None = None) -> int:
    """Load ``(fn, args)``, call ``fn(*args)`` and store the result; exceptions fail the rank."""
    argv = sys.argv[1:] if argv is None else argv
    payload = Path(argv[0])
    fn, args = pickle.loads(payload.read_bytes())
    result = fn(*args)
    rank = detect_wiring().rank  # the core reads the launcher's DEEPRC_* variables
    tmp = payload.parent / f".result-{rank}.pkl"
    tmp.write_bytes(pickle.dumps(result))
    os.replace(tmp, payload.parent / f"result-{rank}.pkl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
