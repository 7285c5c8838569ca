"""deeprc-tf tests: markers, and skip everything when TensorFlow is not installed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras")

sys.path.insert(0, str(Path(__file__).parent))  # camels.py, ranks_*.py


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "tensorflow: needs TensorFlow (and Keras 3)")
    config.addinivalue_line("markers", "mpi: launches ranks with mpirun")
