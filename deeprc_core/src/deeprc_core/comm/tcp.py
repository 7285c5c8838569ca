"""A dependency-free communicator over TCP sockets, star-shaped through rank 0.

It needs only a reachable host and port of rank 0 (MASTER_ADDR/MASTER_PORT or the
DEEPRC_* equivalents), so jobs without mpi4py or torch.distributed (Keras jobs, a
launcher's bootstrap) still get every collective. Rank 0 relays all traffic: fine for
control messages and moderate exchanges, not a replacement for MPI at scale.

Rank 0 listens only on the address the wiring names for it (loopback for a job on one
host); a wildcard MASTER_ADDR (``0.0.0.0``, ``::``), which would listen on every interface,
is refused unless DEEPRC_TCP_LISTEN_ALL=1 opts in (with a warning). Every connection proves it knows the job's secret (:mod:`.secret`) before
rank 0 reads more than a fixed-size greeting from it (:mod:`.channel`); a stranger's
connection is logged and dropped while the job goes on; when strangers exhaust rank 0's file
descriptors, it drops the oldest unauthenticated connection (or backs off) and keeps serving.
Every later frame carries a MAC that is checked before its payload is unpickled.

A peer that dies closes its socket; rank 0 notices, tells every other rank which rank
was lost (or whose connection carried a frame that failed its MAC), and every rank raises
:class:`CommError` — no rank waits forever. A rank that dies of an uncaught exception first
tells the others what it was and where it was raised (:func:`_report_uncaught`).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import pickle
import selectors
import socket
import sys
import time
import traceback
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from .. import env_vars
from ..errors import CommError, CommTimeoutError
from ..network import is_wildcard
from . import channel as ch
from .base import BaseCommunicator, default_timeout, pickled
from .secret import job_secret

logger = logging.getLogger("deeprc.comm.tcp")

_FAIL = "__deeprc_fail__"
#: Extra seconds a rank waits for rank 0's verdict beyond its own timeout.
_GRACE = 2.0
#: Seconds a new connection has to complete its greeting before rank 0 drops it.
HANDSHAKE_TIMEOUT = 10.0
#: accept() errors that mean "out of descriptors or kernel memory": back off, never die.
_STARVED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Seconds rank 0 waits before accepting again when it is out of descriptors and has none to free.
_STARVED_PAUSE = 0.05


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_not_wildcard(host: str, rank: int) -> None:
    """Refuse a wildcard MASTER_ADDR (``0.0.0.0``, ``::``) unless DEEPRC_TCP_LISTEN_ALL=1.

    Rank 0 would listen on every interface of its host, and other hosts could not reach it
    at that address anyway. With the opt-in it is allowed, with a warning.
    """
    if not is_wildcard(host):
        return
    if os.environ.get(env_vars.TCP_LISTEN_ALL, "").strip() == "1":
        logger.warning(
            "rank %d: MASTER_ADDR=%r is a wildcard: rank 0 listens on every interface of its host (%s=1)",
            rank,
            host,
            env_vars.TCP_LISTEN_ALL,
        )
        return
    raise CommError(
        f"rank {rank}: MASTER_ADDR={host!r} is a wildcard address: rank 0 would listen on every interface of its "
        "host, and other hosts cannot reach it there. Set MASTER_ADDR (or DEEPRC_MASTER_ADDR) to rank 0's host "
        f"name or address (127.0.0.1 for a job on one host), or set {env_vars.TCP_LISTEN_ALL}=1 to listen on "
        "every interface anyway"
    )


def listen_address(host: str, port: int) -> tuple[socket.AddressFamily, Any]:
    """The (family, sockaddr) rank 0 binds: ``host`` resolved, IPv4 first; never all interfaces
    unless DEEPRC_TCP_LISTEN_ALL=1 (:func:`check_not_wildcard`)."""
    check_not_wildcard(host, 0)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise CommError(f"rank 0 cannot resolve its own address {host!r} (MASTER_ADDR) ({exc})") from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    family, _, _, _, sockaddr = infos[0]
    if str(sockaddr[0]) != host:
        check_not_wildcard(str(sockaddr[0]), 0)  # a name that resolves to a wildcard
    return family, sockaddr


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


@dataclass
class _Greeting:
    """A connection rank 0 accepted that has not yet proved it belongs to the job."""

    addr: Any
    nonce: bytes
    buf: bytearray
    deadline: float


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
        self._server: socket.socket | None = None
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
        if self._rank == 0:
            self._accept_ranks(host, port, secret, deadline)
        else:
            self._join(host, port, secret, deadline)

    def _listen(self, host: str, port: int) -> socket.socket:
        family, sockaddr = listen_address(host, port)
        srv = socket.socket(family, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            srv.bind(sockaddr)
        except OSError as exc:
            srv.close()
            why = (
                "it is not an address of this machine; set MASTER_ADDR to rank 0's host"
                if exc.errno == errno.EADDRNOTAVAIL
                else str(exc)
            )
            raise CommError(f"rank 0 cannot listen on {host}:{port} ({sockaddr[0]}): {why}") from None
        srv.listen(max(16, self._size))
        srv.setblocking(False)
        return srv

    def _accept_ranks(self, host: str, port: int, secret: bytes, deadline: float) -> None:
        """Accept until every rank has authenticated; strangers are dropped without stalling the others."""
        srv = self._server = self._listen(host, port)
        greeting: dict[socket.socket, _Greeting] = {}
        sel = selectors.DefaultSelector()
        sel.register(srv, selectors.EVENT_READ, None)

        def drop(conn: socket.socket, why: str) -> None:
            g = greeting.pop(conn)
            sel.unregister(conn)
            conn.close()
            self.rejected += 1
            logger.warning("rank 0: dropped a connection from %s on port %d: %s", g.addr, port, why)

        try:
            while len(self._peers) < self._size - 1:
                now = time.monotonic()
                if now >= deadline:
                    missing = sorted(set(range(1, self._size)) - set(self._peers))
                    extra = f"; {self.rejected} connection(s) failed authentication" if self.rejected else ""
                    if self.fd_exhausted:
                        extra += f"; rank 0 ran out of file descriptors {self.fd_exhausted} time(s) (ulimit -n)"
                    raise CommTimeoutError(
                        f"rank 0: ranks {missing} did not connect to port {port} within {self.timeout:g}s{extra}"
                    )
                for conn, g in list(greeting.items()):
                    if now > g.deadline:
                        drop(conn, f"no valid greeting within {HANDSHAKE_TIMEOUT:g}s")
                wake = min([deadline, *(g.deadline for g in greeting.values())])
                for key, _ in sel.select(timeout=max(0.01, min(wake - now, 1.0))):
                    if key.data is None:
                        self._greet(srv, sel, greeting, drop)
                    elif key.fileobj in greeting:
                        conn = key.data
                        joined = self._read_greeting(conn, greeting[conn], secret, drop)
                        if joined is not None:
                            del greeting[conn]
                            sel.unregister(conn)
                            self._welcome(conn, *joined)
        finally:
            for conn in greeting:
                conn.close()
            sel.close()
            srv.close()  # every rank is in (or we failed): later connections are refused
            self._server = None

    def _greet(
        self, srv: socket.socket, sel: selectors.BaseSelector, greeting: dict[socket.socket, _Greeting], drop: Any
    ) -> None:
        try:
            conn, addr = srv.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno not in _STARVED:  # e.g. ECONNABORTED: that connection is gone, the next one may be fine
                logger.warning("rank 0: accept() failed (%s); still waiting for the ranks", exc)
                return
            # Out of descriptors: strangers holding silent connections must not kill the job. The oldest
            # unauthenticated connection goes (a real rank greets within milliseconds), else back off.
            self.fd_exhausted += 1
            if self.fd_exhausted == 1:
                logger.warning("rank 0: out of file descriptors (%s); dropping unauthenticated connections", exc)
            if greeting:
                oldest = min(greeting, key=lambda c: greeting[c].deadline)
                drop(oldest, f"dropped to free a descriptor ({exc.strerror})")
            else:
                time.sleep(_STARVED_PAUSE)
            return
        nonce, msg = ch.challenge()
        try:
            conn.setblocking(False)
            conn.send(msg)  # a few dozen bytes: fits any fresh socket buffer
        except OSError:
            conn.close()
            return
        greeting[conn] = _Greeting(addr, nonce, bytearray(), time.monotonic() + HANDSHAKE_TIMEOUT)
        sel.register(conn, selectors.EVENT_READ, conn)

    def _read_greeting(
        self, conn: socket.socket, g: _Greeting, secret: bytes, drop: Any
    ) -> tuple[int, bytes, bytes] | None:
        """Read what has arrived of a greeting; (rank, welcome, key) once it is complete and valid."""
        try:
            chunk = conn.recv(ch.HELLO_SIZE - len(g.buf))
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            drop(conn, f"connection error ({exc})")
            return None
        if not chunk:
            drop(conn, "closed before completing the greeting")
            return None
        g.buf += chunk
        if len(g.buf) < ch.HELLO_SIZE:
            return None
        try:
            peer, welcome, key = ch.check_hello(secret, g.nonce, bytes(g.buf), self._size)
        except ch.AuthError as exc:
            drop(conn, str(exc))
            return None
        if peer in self._peers:
            drop(conn, f"authenticated as rank {peer}, which is already connected")
            return None
        return peer, welcome, key

    def _welcome(self, conn: socket.socket, peer: int, welcome: bytes, key: bytes) -> None:
        try:
            conn.setblocking(True)
            conn.settimeout(self.timeout)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.sendall(welcome)
        except OSError as exc:
            conn.close()
            logger.warning("rank 0: rank %d left during its greeting (%s)", peer, exc)
            return
        self._peers[peer] = ch.Channel(conn, key, ch.FROM_ROOT, ch.TO_ROOT)

    def _join(self, host: str, port: int, secret: bytes, deadline: float) -> None:
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
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        where = f"rank {self._rank}: rank 0 at {host}:{port}"
        try:
            msg, transcript = ch.hello(secret, bytes(ch.recv_exact(sock, ch.CHALLENGE_SIZE)), self._rank)
            sock.sendall(msg)
            key = ch.check_welcome(secret, transcript, bytes(ch.recv_exact(sock, 32)))
        except ch.AuthError as exc:
            sock.close()
            raise CommError(f"{where} failed authentication: {exc}") from None
        except TimeoutError:
            sock.close()
            raise CommTimeoutError(f"{where} did not complete the greeting within {self.timeout:g}s") from None
        except OSError as exc:
            sock.close()
            raise CommError(
                f"{where} closed the connection during authentication ({exc}): do all ranks share the same "
                "DEEPRC_JOB_SECRET (or, on one host, the same user and MASTER_PORT)?"
            ) from None
        sock.settimeout(self.timeout)
        self._root = ch.Channel(sock, key, ch.TO_ROOT, ch.FROM_ROOT)

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
        for sock in list(self._peers.values()) + [s for s in (self._root, self._server) if s is not None]:
            try:
                sock.close()
            except OSError:
                pass
        self._peers.clear()
        self._root = self._server = None

    def __del__(self) -> None:
        self.close()
