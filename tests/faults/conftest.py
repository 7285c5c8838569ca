"""The fault suite: each case is a real run that records its figures in results/faults.json.

``record(case, **figures)`` merges one case's figures (detection seconds, what was lost, ...)
into ``tests/faults/results/faults.json``, which docs/reliability.md quotes.
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

RESULTS = Path(__file__).resolve().parent / "results" / "faults.json"


def _write(case: str, figures: dict[str, Any]) -> None:
    try:
        data = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        data = {}
    data[case] = {**figures, "measured": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.node()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, RESULTS)


@pytest.fixture
def record() -> Callable[..., None]:
    """``record(case, **figures)``: keep one fault case's measured figures."""

    def rec(case: str, **figures: Any) -> None:
        _write(case, figures)

    return rec
