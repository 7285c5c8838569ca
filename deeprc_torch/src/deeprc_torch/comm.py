"""A deeprc-core communicator over an initialised ``torch.distributed`` process group.

Under torch jobs (torchrun, Lightning DDP) the process group already connects every rank,
so GlobalTables built after it exists need neither mpi4py nor the core's TCP relay.
Collectives run on a dedicated gloo group (CPU tensors even when DDP uses NCCL) whose
timeout is the core's ``DEEPRC_COMM_TIMEOUT``; failures become :class:`CommError`.

Importing :mod:`deeprc_torch` registers this communicator as the ``torch`` provider, so
:func:`deeprc_core.get_communicator` picks it whenever a process group is initialised.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from deeprc_core.comm import BaseCommunicator, Communicator, default_timeout, get_communicator, set_default_communicator

from deeprc_core import CommError, CommTimeoutError, DeepRCError, Wiring, WiringError, register_communicator

#: Largest message one exchange round moves to one peer (keeps gloo's sizes well inside int32 ranges).
CHUNK_BYTES = 256 * 1024 * 1024


def torch_distributed_ready() -> bool:
    """True when a default torch.distributed process group is initialised."""
    return bool(dist.is_available() and dist.is_initialized())


def _fail(exc: BaseException, what: str, timeout: float) -> CommError:
    text = str(exc)
    if "timed out" in text.lower() or "timeout" in text.lower():
        return CommTimeoutError(
            f"torch.distributed {what} did not complete within {timeout:g}s (a peer rank is stuck or gone; "
            f"raise DEEPRC_COMM_TIMEOUT if it is just slow): {text}"
        )
    return CommError(f"torch.distributed {what} failed (a peer rank has probably exited): {text}")


class TorchCommunicator(BaseCommunicator):
    """The core's collectives over a gloo group of the initialised default process group."""

    kind = "torch"

    def __init__(self, timeout: float | None = None) -> None:
        if not torch_distributed_ready():
            raise RuntimeError("TorchCommunicator needs an initialised torch.distributed process group")
        self.timeout = default_timeout() if timeout is None else float(timeout)
        self._rank = dist.get_rank()
        self._size = dist.get_world_size()
        # A group of our own: gloo works on CPU tensors under NCCL jobs too, and its timeout is ours.
        # new_group is collective; the core creates communicators at the same point on every rank.
        self.group: Any = dist.new_group(backend="gloo", timeout=timedelta(seconds=self.timeout))

    @property
    def rank(self) -> int:
        """This process's rank in the default process group."""
        return self._rank

    @property
    def size(self) -> int:
        """World size of the default process group."""
        return self._size

    def _wait(self, work: Any, what: str) -> None:
        try:
            work.wait(timedelta(seconds=self.timeout))
        except Exception as exc:  # gloo raises RuntimeError / DistBackendError subclasses
            raise _fail(exc, what, self.timeout) from exc

    def barrier(self) -> None:
        """A gloo barrier bounded by the timeout."""
        self._wait(dist.barrier(group=self.group, async_op=True), "barrier")

    def _allgather_sizes(self, value: int, what: str) -> list[int]:
        mine = torch.tensor([value], dtype=torch.int64)
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self._size)]
        self._wait(dist.all_gather(sizes, mine, group=self.group, async_op=True), what)
        return [int(s.item()) for s in sizes]

    def allgather(self, obj: Any) -> list[Any]:
        """Pickle, exchange sizes, then all_gather padded byte tensors."""
        payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        sizes = self._allgather_sizes(len(payload), "allgather(sizes)")
        width = max(sizes)
        mine = torch.zeros(width, dtype=torch.uint8)
        if payload:
            mine[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
        parts = [torch.empty(width, dtype=torch.uint8) for _ in range(self._size)]
        self._wait(dist.all_gather(parts, mine, group=self.group, async_op=True), "allgather")
        return [pickle.loads(p[:n].numpy().tobytes()) for p, n in zip(parts, sizes)]

    def allreduce_int(self, values: Sequence[int], op: str = "sum") -> list[int]:  # type: ignore[override]
        """all_reduce of an int64 vector."""
        tensor = torch.tensor([int(v) for v in values], dtype=torch.int64)
        red = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op]
        self._wait(dist.all_reduce(tensor, op=red, group=self.group, async_op=True), f"allreduce({op})")
        return [int(v) for v in tensor.tolist()]

    def alltoall_bytes(self, buffers: Sequence[bytes | memoryview]) -> list[bytes | memoryview]:
        """Send ``buffers[i]`` to rank i with point-to-point messages in bounded rounds.

        gloo has no all_to_all, so each round posts an isend/irecv per peer and waits for
        all of them against the timeout.
        """
        if len(buffers) != self._size:
            raise ValueError(f"alltoall_bytes needs one buffer per rank ({self._size}), got {len(buffers)}")
        views = [np.frombuffer(b, dtype=np.uint8) if len(b) else np.empty(0, np.uint8) for b in buffers]
        send_sizes = [int(v.size) for v in views]
        table = self.allgather(send_sizes)  # table[src][dst]: bytes src sends to dst
        recv_sizes = [int(table[src][self._rank]) for src in range(self._size)]
        outputs = [np.empty(n, dtype=np.uint8) for n in recv_sizes]
        outputs[self._rank][:] = views[self._rank]
        biggest = max(max(row) for row in table) if table else 0
        rounds = max((biggest + CHUNK_BYTES - 1) // CHUNK_BYTES, 1)
        for k in range(rounds):
            lo, hi = k * CHUNK_BYTES, (k + 1) * CHUNK_BYTES
            works = []
            for peer in range(self._size):
                if peer == self._rank:
                    continue
                out_chunk = views[peer][lo:hi]
                if out_chunk.size:
                    # gloo reads the tensor while sending; a private contiguous copy of this chunk only
                    works.append(dist.isend(torch.from_numpy(out_chunk.copy()), peer, group=self.group, tag=k))
                in_chunk = outputs[peer][lo:hi]
                if in_chunk.size:
                    works.append(dist.irecv(torch.from_numpy(in_chunk), peer, group=self.group, tag=k))
            for w in works:
                self._wait(w, f"alltoall(round {k + 1}/{rounds})")
        return [o.data for o in outputs]


def process_group_communicator(world_size: int, rank: int) -> Communicator:
    """The core's communicator for a job whose process group has ``world_size`` ranks (this one ``rank``).

    The job's communicator when it agrees; otherwise (Lightning's ``ddp_spawn``, whose children
    carry no launcher variables, or a launcher whose variables do not say the rank) one over the
    initialised process group, made the job's default so that tables read after this use it.
    Collective when it creates one: call it at the same point on every rank.
    """
    try:
        comm: Communicator | None = get_communicator()
    except (WiringError, ValueError):
        comm = None
    if comm is not None and comm.size == world_size and comm.rank == rank:
        return comm
    if not torch_distributed_ready() or dist.get_world_size() != world_size:
        raise DeepRCError(
            f"rank {rank} of {world_size}: no torch.distributed process group of {world_size} ranks to read the "
            "tables over; start the job with a DDP strategy (DeepRCStrategy, 'ddp', 'ddp_spawn')"
        )
    comm = TorchCommunicator()
    set_default_communicator(comm)
    return comm


def _factory(wiring: Wiring) -> TorchCommunicator:
    return TorchCommunicator()


def register() -> None:
    """Offer TorchCommunicator to deeprc-core whenever a process group is initialised."""
    register_communicator("torch", _factory, available=torch_distributed_ready, priority=10)
