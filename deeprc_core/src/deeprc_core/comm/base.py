"""The communicator interface: the few collectives the core needs.

Every implementation honours a timeout: a collective whose peers do not arrive in
``timeout`` seconds raises :class:`~deeprc_core.errors.CommTimeoutError` instead of
waiting forever, and a peer that disconnects raises :class:`~deeprc_core.errors.CommError`.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from .. import env_vars
from ..errors import RankFailedError

ReduceOp = Literal["sum", "min", "max"]


def default_timeout() -> float:
    """Seconds a collective may wait, from DEEPRC_COMM_TIMEOUT (default 300)."""
    raw = os.environ.get(env_vars.COMM_TIMEOUT)
    if not raw:
        return env_vars.DEFAULT_COMM_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{env_vars.COMM_TIMEOUT}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise ValueError(f"{env_vars.COMM_TIMEOUT}={raw!r} must be positive")
    return value


@runtime_checkable
class Communicator(Protocol):
    """What the core needs from a job's processes: rank, size and five collectives.

    All methods are collective: every rank must call them in the same order.
    """

    kind: str
    timeout: float

    @property
    def rank(self) -> int:
        """This process's rank, 0-based."""
        ...

    @property
    def size(self) -> int:
        """Number of ranks."""
        ...

    def barrier(self) -> None:
        """Wait until every rank has arrived."""
        ...

    def allgather(self, obj: Any) -> list[Any]:
        """Every rank's (small, picklable) object, in rank order."""
        ...

    def bcast(self, obj: Any, root: int = 0) -> Any:
        """Root's object on every rank."""
        ...

    def allreduce_int(self, values: Sequence[int], op: ReduceOp = "sum") -> list[int]:
        """Element-wise reduction of equally long integer lists."""
        ...

    def alltoall_bytes(self, buffers: Sequence[bytes | memoryview]) -> list[bytes | memoryview]:
        """Send ``buffers[i]`` to rank i; return what every rank sent to this one, by source."""
        ...


class BaseCommunicator:
    """Shared helpers: bcast and allreduce derived from allgather.

    Subclasses implement ``rank``, ``size``, ``barrier``, ``allgather`` and
    ``alltoall_bytes``; they may override the derived collectives with faster ones.
    """

    kind: str = "base"
    timeout: float = env_vars.DEFAULT_COMM_TIMEOUT

    @property
    def rank(self) -> int:
        """This process's rank, 0-based."""
        raise NotImplementedError

    @property
    def size(self) -> int:
        """Number of ranks."""
        raise NotImplementedError

    def barrier(self) -> None:
        """Wait until every rank has arrived."""
        self.allgather(None)

    def allgather(self, obj: Any) -> list[Any]:
        """Every rank's (small, picklable) object, in rank order."""
        raise NotImplementedError

    def alltoall_bytes(self, buffers: Sequence[bytes | memoryview]) -> list[bytes | memoryview]:
        """Send ``buffers[i]`` to rank i; return what every rank sent to this one, by source."""
        raise NotImplementedError

    def bcast(self, obj: Any, root: int = 0) -> Any:
        """Root's object on every rank."""
        return self.allgather(obj if self.rank == root else None)[root]

    def allreduce_int(self, values: Sequence[int], op: ReduceOp = "sum") -> list[int]:
        """Element-wise reduction of equally long integer lists."""
        rows = self.allgather([int(v) for v in values])
        lengths = {len(r) for r in rows}
        if len(lengths) != 1:
            raise ValueError(f"allreduce_int got lists of different lengths per rank: {sorted(lengths)}")
        reducers: dict[str, Callable[[Iterable[int]], int]] = {"sum": sum, "min": min, "max": max}
        fn = reducers[op]
        return [int(fn(col)) for col in zip(*rows)] if rows and rows[0] else []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} rank {self.rank} of {self.size}, timeout {self.timeout:g}s>"


def agree(comm: Communicator, error: BaseException | None, what: str) -> None:
    """Make a local failure fail every rank.

    Each rank passes the exception it hit while doing ``what`` (or None). If any rank
    failed, every rank raises: the failing rank re-raises its own exception, the others
    raise :class:`RankFailedError` naming the failed ranks and their messages. This is
    how validation errors (a missing column on one rank, say) stop the whole job
    instead of leaving the healthy ranks waiting in the next collective.
    """
    message = None if error is None else f"{type(error).__name__}: {error}"
    reports = comm.allgather(message)
    failed = {r: m for r, m in enumerate(reports) if m is not None}
    if not failed:
        return
    if error is not None:
        raise error
    listing = "; ".join(f"rank {r}: {m}" for r, m in failed.items())
    raise RankFailedError(f"{what} failed on rank(s) {sorted(failed)}: {listing}", failed)


def pickled(obj: Any) -> bytes:
    """Pickle with the highest protocol (buffers of large objects stay out-of-band-free)."""
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
