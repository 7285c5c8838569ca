"""deeprc-launch: run Deep RC jobs and pipelines as RADICAL-Pilot tasks wired for NCCL/GLOO/MPI.

``deeprc-launch --ranks 2 train.py`` (see :mod:`deeprc_launch.cli`) and the pipeline API
:class:`Launcher`. Importing this package is cheap (no radical.pilot, no deep-learning
framework): the in-task bootstrap imports it on every rank.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Launcher", "TaskHandle", "RunResult", "__version__"]

if TYPE_CHECKING:
    from .launcher import Launcher, TaskHandle
    from .output import RunResult


def __getattr__(name: str) -> Any:
    """Import the API lazily, so the bootstrap never pays for it."""
    if name in ("Launcher", "TaskHandle"):
        from . import launcher

        return getattr(launcher, name)
    if name == "RunResult":
        from .output import RunResult

        return RunResult
    raise AttributeError(f"module 'deeprc_launch' has no attribute {name!r}")
