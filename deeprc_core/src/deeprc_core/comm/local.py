"""The communicator of a single process: every collective is the identity."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import BaseCommunicator, default_timeout


class LocalCommunicator(BaseCommunicator):
    """Rank 0 of 1; collectives return immediately."""

    kind = "local"

    def __init__(self, timeout: float | None = None) -> None:
        self.timeout = default_timeout() if timeout is None else float(timeout)

    @property
    def rank(self) -> int:
        """Always 0."""
        return 0

    @property
    def size(self) -> int:
        """Always 1."""
        return 1

    def barrier(self) -> None:
        """Nothing to wait for."""

    def allgather(self, obj: Any) -> list[Any]:
        """``[obj]``."""
        return [obj]

    def alltoall_bytes(self, buffers: Sequence[bytes | memoryview]) -> list[bytes | memoryview]:
        """The one buffer addressed to this rank."""
        if len(buffers) != 1:
            raise ValueError(f"alltoall_bytes needs one buffer per rank (1), got {len(buffers)}")
        return [buffers[0]]
