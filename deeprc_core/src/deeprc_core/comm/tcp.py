"""A dependency-free communicator over TCP sockets, star-shaped through rank 0.

It needs only a reachable host and port of rank 0 (MASTER_ADDR/MASTER_PORT or the
DEEPRC_* equivalents), so jobs without mpi4py or torch.distributed (Keras jobs, a
launcher's bootstrap) still get every collective. Rank 0 relays all traffic: fine for
control messages and moderate exchanges, not a replacement for MPI at scale.

Rank 0 listens only on the address the wiring names for it (loopback for a job on one
host); a wildcard MASTER_ADDR (``0.0.0.0``, ``::``), which would listen on every interface,
is refused unless DEEPRC_TCP_LISTEN_ALL=1 opts in (with a warning). Every connection proves
it knows the job's secret before rank 0 reads more than a fixed-size greeting from it, and
strangers are dropped while the job goes on (:mod:`.rendezvous`, how the ranks meet).
Every later frame carries a MAC that is checked before its payload is unpickled.

A peer that dies closes its socket; rank 0 notices, tells every other rank which rank
was lost (or whose connection carried a frame that failed its MAC), and every rank raises
:class:`CommError` — no rank waits forever. A rank that dies of an uncaught exception first
tells the others what it was and where it was raised (:func:`_report_uncaught`).
"""

from __future__ import annotations

import logging
import pickle
import selectors
import sys
import time
import traceback
import weakref
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from ..errors import CommError, CommTimeoutError
from ..network import is_loopback
from . import channel as ch
from .base import BaseCommunicator, default_timeout, pickled
from .rendezvous import Gate, check_not_wildcard, join
from .secret import job_secret

logger = logging.getLogger("deeprc.comm.tcp")

_FAIL = "__deeprc_fail__"
#: Extra seconds a rank waits for rank 0's verdict beyond its own timeout.
_GRACE = 2.0


#: Live communicators of this process, told by the excepthook when the process dies of an exception.
_LIVE: weakref.WeakSet[TCPCommunicator] = weakref.WeakSet()
_HOOKED = False


def _install_report_hook() -> None:
    """Chain :func:`_report_uncaught` in front of ``sys.excepthook`` (once per process)."""
    global _HOOKED
    if _HOOKED:
        return
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        _report_uncaught(kind, value, tb)
        previous(kind, value, tb)

    sys.excepthook = hook
    _HOOKED = True


def _report_uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    """Tell the other ranks of every live job why this process is dying, instead of a bare "rank N exited"."""
    frames = traceback.extract_tb(tb) if tb is not None else []
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    for comm in list(_LIVE):
        try:
            comm._tell_peers(f"rank {comm.rank} died of {kind.__name__}: {value}{where}")
        except BaseException:  # noqa: BLE001 - the process is exiting; never mask the original error
            pass


def _is_fail(msg: Any) -> bool:
    """Whether ``msg`` is a failure notice ``(_FAIL, kind, message)`` rather than a collective's data."""
    return isinstance(msg, tuple) and len(msg) == 3 and msg[0] == _FAIL


class TCPCommunicator(BaseCommunicator):
    """Collectives relayed by rank 0 over one authenticated TCP connection per rank.

    ``secret`` defaults to :func:`~deeprc_core.comm.secret.job_secret` (DEEPRC_JOB_SECRET,
    or a per-user key when ``single_host``); ``single_host`` defaults to whether ``host``
    is a loopback address.
    """

    kind = "tcp"

    def __init__(
        self,
        rank: int,
        size: int,
        host: str,
        port: int,
        timeout: float | None = None,
        *,
        secret: bytes | None = None,
        single_host: bool | None = None,
    ) -> None:
        self.timeout = default_timeout() if timeout is None else float(timeout)
        self._rank, self._size = int(rank), int(size)
        self._peers: dict[int, ch.Channel] = {}
        self._root: ch.Channel | None = None
        self._seq = 0
        self._broken: str | None = None
        #: connections rank 0 dropped because they failed the handshake
        self.rejected = 0
        #: times rank 0's accept() found its file descriptors (or kernel buffers) exhausted
        self.fd_exhausted = 0
        if self._size > 1:
            check_not_wildcard(host, self._rank)  # on every rank: all fail at once, none waits for rank 0
            local = is_loopback(host) if single_host is None else single_host
            key = job_secret(local, int(port)) if secret is None else secret
            self._connect(host, int(port), key)
            _LIVE.add(self)
            _install_report_hook()

    @property
    def rank(self) -> int:
        """This process's rank."""
        return self._rank

    @property
    def size(self) -> int:
        """Number of ranks."""
        return self._size

    def _connect(self, host: str, port: int, secret: bytes) -> None:
        deadline = time.monotonic() + self.timeout
        if self._rank != 0:
            self._root = join(self._rank, host, port, secret, self.timeout, deadline)
            return
        gate = Gate(self._size, self.timeout)
        self._peers = gate.peers  # the same dict: close() also closes the ranks that joined before a failure
        try:
            gate.accept_ranks(host, port, secret, deadline)
        finally:
            self.rejected, self.fd_exhausted = gate.rejected, gate.fd_exhausted

    def _exchange(self, contribution: Any, route: Any) -> Any:
        """One collective step: everyone sends to rank 0; rank 0 routes and replies.

        ``route(contributions) -> per-rank replies`` runs on rank 0 only. After any
        failure the communicator is broken (the byte streams are out of step), so every
        later collective raises at once with the first failure's message.
        """
        if self._broken is not None:
            raise CommError(f"rank {self._rank}: communicator unusable after an earlier failure: {self._broken}")
        self._seq += 1
        if self._size == 1:
            return route([contribution])[0]
        try:
            if self._rank != 0:
                return self._exchange_leaf(contribution)
            return self._exchange_root(contribution, route)
        except CommError as exc:
            self._broken = str(exc)
            raise

    def _exchange_leaf(self, contribution: Any) -> Any:
        assert self._root is not None
        try:
            self._root.send(pickled((self._seq, contribution)))
            # Rank 0 gives its verdict within its own timeout; wait a little longer so that a
            # peer's timeout reaches us as rank 0's message rather than as our own guess.
            self._root.settimeout(self.timeout + _GRACE)
            reply = pickle.loads(self._root.recv())
        except TimeoutError:
            raise CommTimeoutError(
                f"rank {self._rank}: collective #{self._seq} got no answer from rank 0 within {self.timeout:g}s"
            ) from None
        except ch.AuthError as exc:
            # Forged or corrupted traffic toward this rank: say so to rank 0 (our sending direction is
            # intact), which tells the others, instead of leaving them a bare "rank N exited".
            msg = f"rank {self._rank}: a frame from rank 0 failed its MAC check during collective #{self._seq} ({exc})"
            try:
                self._root.settimeout(1.0)
                self._root.send(pickled((_FAIL, "error", msg)))
            except OSError:
                pass
            raise CommError(msg) from None
        except (ConnectionError, OSError, EOFError) as exc:
            verdict = self._pending_verdict()
            if verdict is None:
                raise CommError(f"rank {self._rank}: lost rank 0 during collective #{self._seq} ({exc})") from None
            reply = verdict
        if _is_fail(reply):
            kind = CommTimeoutError if reply[1] == "timeout" else CommError
            raise kind(f"rank {self._rank}: {reply[2]}")
        return reply

    def _pending_verdict(self) -> Any:
        """A failure notice rank 0 sent before closing, if one is waiting unread (else None)."""
        assert self._root is not None
        try:
            self._root.settimeout(0.5)
            reply = pickle.loads(self._root.recv())
        except (OSError, EOFError, pickle.UnpicklingError, ch.AuthError):
            return None
        return reply if _is_fail(reply) else None

    def _exchange_root(self, contribution: Any, route: Any) -> Any:
        contributions: list[Any] = [contribution] + [None] * (self._size - 1)
        pending = {self._peers[p]: p for p in range(1, self._size)}
        deadline = time.monotonic() + self.timeout
        # Wait on all peers at once: a dead peer is noticed at once even while another is slow.
        with selectors.DefaultSelector() as sel:
            for chan, peer in pending.items():
                sel.register(chan, selectors.EVENT_READ, peer)
            while pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    late = sorted(pending.values())
                    msg = f"rank(s) {late} did not reach collective #{self._seq} within {self.timeout:g}s"
                    self._fail_all(msg, "timeout")
                    raise CommTimeoutError(f"rank 0: {msg}")
                for key, _ in sel.select(timeout=min(remaining, 1.0)):
                    peer = key.data
                    chan = self._peers[peer]
                    try:
                        chan.settimeout(max(deadline - time.monotonic(), 0.01))
                        got = pickle.loads(chan.recv())
                    except TimeoutError:
                        continue  # a partial message: the deadline check above decides
                    except ch.AuthError as exc:
                        msg = (
                            f"a frame on rank {peer}'s connection failed its MAC check during collective "
                            f"#{self._seq} ({exc}): forged or corrupted traffic, nothing of it was unpickled"
                        )
                        self._fail_all(msg, "error")
                        raise CommError(f"rank 0: {msg}") from None
                    except (ConnectionError, OSError, EOFError, pickle.UnpicklingError) as exc:
                        msg = f"rank {peer} failed or exited during collective #{self._seq}"
                        self._fail_all(msg, "error")
                        raise CommError(f"rank 0: {msg} ({exc})") from None
                    if _is_fail(got):  # the rank's own report of why it cannot go on
                        self._fail_all(got[2], "error")
                        raise CommError(f"rank 0: {got[2]}")
                    seq, value = got
                    if seq != self._seq:
                        msg = (
                            f"rank {peer} is at collective #{seq}, rank 0 at #{self._seq}: "
                            "ranks called collectives in different orders"
                        )
                        self._fail_all(msg, "error")
                        raise CommError(msg)
                    contributions[peer] = value
                    sel.unregister(chan)
                    del pending[chan]
        replies = route(contributions)
        for peer in range(1, self._size):
            try:
                self._peers[peer].settimeout(self.timeout)
                self._peers[peer].send(pickled(replies[peer]))
            except OSError as exc:
                self._fail_all(f"rank {peer} disconnected after collective #{self._seq}", "error")
                raise CommError(f"rank 0: could not answer rank {peer} ({exc})") from None
        return replies[0]

    def _fail_all(self, message: str, kind: str) -> None:
        """Tell every peer that this collective failed (``kind``: "timeout" or "error")."""
        for chan in self._peers.values():
            try:
                chan.settimeout(1.0)
                chan.send(pickled((_FAIL, kind, message)))
            except OSError:
                pass

    def allgather(self, obj: Any) -> list[Any]:
        """Every rank's object, in rank order."""
        return self._exchange(obj, lambda xs: [list(xs)] * len(xs))  # type: ignore[no-any-return]

    def alltoall_bytes(self, buffers: Sequence[bytes | memoryview]) -> list[bytes | memoryview]:
        """Rank 0 routes ``buffers[i]`` of every rank to rank i."""
        if len(buffers) != self._size:
            raise ValueError(f"alltoall_bytes needs one buffer per rank ({self._size}), got {len(buffers)}")
        mine = [bytes(b) for b in buffers]
        return self._exchange(  # type: ignore[no-any-return]
            mine, lambda xs: [[xs[src][dst] for src in range(len(xs))] for dst in range(len(xs))]
        )

    def _tell_peers(self, message: str) -> None:
        """Send a failure notice: rank 0 to every rank, another rank to rank 0 (which relays it)."""
        if self._broken is not None or self._size == 1:
            return  # the others already know of the earlier failure
        self._broken = message
        if self._rank == 0:
            self._fail_all(message, "error")
        elif self._root is not None:
            self._root.settimeout(1.0)
            self._root.send(pickled((_FAIL, "error", message)))

    def close(self) -> None:
        """Close the sockets (also done at garbage collection)."""
        _LIVE.discard(self)
        for sock in list(self._peers.values()) + ([] if self._root is None else [self._root]):
            try:
                sock.close()
            except OSError:
                pass
        self._peers.clear()
        self._root = None

    def __del__(self) -> None:
        self.close()
