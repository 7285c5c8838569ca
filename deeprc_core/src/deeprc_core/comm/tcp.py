"""A dependency-free communicator over TCP sockets, star-shaped through rank 0.

It needs only a reachable host and port of rank 0 (MASTER_ADDR/MASTER_PORT or the
DEEPRC_* equivalents), so jobs without mpi4py or torch.distributed (Keras jobs, a
launcher's bootstrap) still get every collective. Rank 0 relays all traffic: fine for
control messages and moderate exchanges, not a replacement for MPI at scale.

A peer that dies closes its socket; rank 0 notices, tells every other rank which rank
was lost, and every rank raises :class:`CommError` — no rank waits forever.
"""

from __future__ import annotations

import pickle
import selectors
import socket
import struct
import time
from collections.abc import Sequence
from typing import Any

from ..errors import CommError, CommTimeoutError
from .base import BaseCommunicator, default_timeout, pickled

_HEADER = struct.Struct("!Q")
_FAIL = "__deeprc_fail__"
#: Extra seconds a rank waits for rank 0's verdict beyond its own timeout.
_GRACE = 2.0


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_HEADER.pack(len(payload)))
    sock.sendall(payload)


def _recv_exact(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("peer closed the connection")
        got += k
    return buf


def _recv(sock: socket.socket) -> Any:
    (n,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    return pickle.loads(_recv_exact(sock, n))


class TCPCommunicator(BaseCommunicator):
    """Collectives relayed by rank 0 over one TCP connection per rank."""

    kind = "tcp"

    def __init__(self, rank: int, size: int, host: str, port: int, timeout: float | None = None) -> None:
        self.timeout = default_timeout() if timeout is None else float(timeout)
        self._rank, self._size = int(rank), int(size)
        self._peers: dict[int, socket.socket] = {}
        self._server: socket.socket | None = None
        self._root: socket.socket | None = None
        self._seq = 0
        self._broken: str | None = None
        if self._size > 1:
            self._connect(host, int(port))

    @property
    def rank(self) -> int:
        """This process's rank."""
        return self._rank

    @property
    def size(self) -> int:
        """Number of ranks."""
        return self._size

    def _connect(self, host: str, port: int) -> None:
        deadline = time.monotonic() + self.timeout
        if self._rank == 0:
            srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind(("", port))
            srv.listen(self._size)
            self._server = srv
            while len(self._peers) < self._size - 1:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    missing = sorted(set(range(1, self._size)) - set(self._peers))
                    raise CommTimeoutError(
                        f"rank 0: ranks {missing} did not connect to port {port} within {self.timeout:g}s"
                    )
                srv.settimeout(remaining)
                try:
                    conn, _ = srv.accept()
                except TimeoutError:
                    continue
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.settimeout(self.timeout)
                peer = int(_recv(conn))
                self._peers[peer] = conn
        else:
            last: Exception | None = None
            while time.monotonic() < deadline:
                try:
                    sock = socket.create_connection((host, port), timeout=self.timeout)
                    break
                except OSError as exc:
                    last = exc
                    time.sleep(0.1)
            else:
                raise CommTimeoutError(
                    f"rank {self._rank}: could not reach rank 0 at {host}:{port} within {self.timeout:g}s ({last})"
                )
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self.timeout)
            _send(sock, pickled(self._rank))
            self._root = sock

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
            _send(self._root, pickled((self._seq, contribution)))
            # Rank 0 gives its verdict within its own timeout; wait a little longer so that a
            # peer's timeout reaches us as rank 0's message rather than as our own guess.
            self._root.settimeout(self.timeout + _GRACE)
            reply = _recv(self._root)
        except TimeoutError:
            raise CommTimeoutError(
                f"rank {self._rank}: collective #{self._seq} got no answer from rank 0 within {self.timeout:g}s"
            ) from None
        except (ConnectionError, OSError, EOFError) as exc:
            verdict = self._pending_verdict()
            if verdict is None:
                raise CommError(f"rank {self._rank}: lost rank 0 during collective #{self._seq} ({exc})") from None
            reply = verdict
        if isinstance(reply, tuple) and len(reply) == 3 and reply[0] == _FAIL:
            kind = CommTimeoutError if reply[1] == "timeout" else CommError
            raise kind(f"rank {self._rank}: {reply[2]}")
        return reply

    def _pending_verdict(self) -> Any:
        """A failure notice rank 0 sent before closing, if one is waiting unread (else None)."""
        assert self._root is not None
        try:
            self._root.settimeout(0.5)
            reply = _recv(self._root)
        except (OSError, EOFError, pickle.UnpicklingError):
            return None
        return reply if isinstance(reply, tuple) and len(reply) == 3 and reply[0] == _FAIL else None

    def _exchange_root(self, contribution: Any, route: Any) -> Any:
        contributions: list[Any] = [contribution] + [None] * (self._size - 1)
        pending = {self._peers[p]: p for p in range(1, self._size)}
        deadline = time.monotonic() + self.timeout
        # Wait on all peers at once: a dead peer is noticed at once even while another is slow.
        with selectors.DefaultSelector() as sel:
            for sock, peer in pending.items():
                sel.register(sock, selectors.EVENT_READ, peer)
            while pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    late = sorted(pending.values())
                    msg = f"rank(s) {late} did not reach collective #{self._seq} within {self.timeout:g}s"
                    self._fail_all(msg, "timeout")
                    raise CommTimeoutError(f"rank 0: {msg}")
                for key, _ in sel.select(timeout=min(remaining, 1.0)):
                    peer = key.data
                    try:
                        key.fileobj.settimeout(max(deadline - time.monotonic(), 0.01))  # type: ignore[union-attr]
                        seq, value = _recv(key.fileobj)  # type: ignore[arg-type]
                    except TimeoutError:
                        continue  # a partial message: the deadline check above decides
                    except (ConnectionError, OSError, EOFError, pickle.UnpicklingError) as exc:
                        msg = f"rank {peer} failed or exited during collective #{self._seq}"
                        self._fail_all(msg, "error")
                        raise CommError(f"rank 0: {msg} ({exc})") from None
                    if seq != self._seq:
                        msg = (
                            f"rank {peer} is at collective #{seq}, rank 0 at #{self._seq}: "
                            "ranks called collectives in different orders"
                        )
                        self._fail_all(msg, "error")
                        raise CommError(msg)
                    contributions[peer] = value
                    sel.unregister(key.fileobj)
                    del pending[key.fileobj]  # type: ignore[arg-type]
        replies = route(contributions)
        for peer in range(1, self._size):
            try:
                self._peers[peer].settimeout(self.timeout)
                _send(self._peers[peer], pickled(replies[peer]))
            except OSError as exc:
                self._fail_all(f"rank {peer} disconnected after collective #{self._seq}", "error")
                raise CommError(f"rank 0: could not answer rank {peer} ({exc})") from None
        return replies[0]

    def _fail_all(self, message: str, kind: str) -> None:
        """Tell every peer that this collective failed (``kind``: "timeout" or "error")."""
        for sock in self._peers.values():
            try:
                sock.settimeout(1.0)
                _send(sock, pickled((_FAIL, kind, message)))
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

    def close(self) -> None:
        """Close the sockets (also done at garbage collection)."""
        for sock in list(self._peers.values()) + [s for s in (self._root, self._server) if s is not None]:
            try:
                sock.close()
            except OSError:
                pass
        self._peers.clear()
        self._root = self._server = None

    def __del__(self) -> None:
        self.close()
