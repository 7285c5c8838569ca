"""The fault suite: each case is a real run that records its figures.

``record(case, **figures)`` merges one case's figures (detection seconds, what was lost, ...)
into ``results/faults/faults.json`` (git-ignored: running the tests leaves the tree clean).
With ``pytest --publish`` (``./dev test --publish``) they go into the tracked
``tests/faults/results/faults.json`` as well, which docs/reliability.md quotes
(``python -m tests.faults.report`` rewrites its table from it).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

#: The tracked figures the docs quote (written only with ``--publish``)
PUBLISHED = Path(__file__).resolve().parent / "results" / "faults.json"
#: Every run's figures (git-ignored)
RUN_RESULTS = Path(__file__).resolve().parents[2] / "results" / "faults" / "faults.json"


def _write(path: Path, case: str, figures: dict[str, Any]) -> None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data[case] = {**figures, "measured": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.node()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``record(case, **figures)``: keep one fault case's measured figures (see the module docstring for where)."""
    paths = [RUN_RESULTS] + ([PUBLISHED] if request.config.getoption("--publish") else [])

    def rec(case: str, **figures: Any) -> None:
        for path in paths:
            _write(path, case, figures)

    return rec
