"""How the ranks of a TCP job meet: rank 0's authenticated listening socket (:class:`Gate`) and a rank's :func:`join`.

Rank 0 listens only on the address the wiring names for it (:func:`listen_address`; a
wildcard only with DEEPRC_TCP_LISTEN_ALL=1). Every connection proves it knows the job's
secret (:mod:`.secret`) before rank 0 reads more than a fixed-size greeting from it
(:mod:`.channel`); a stranger's connection is logged and dropped while the others go on; when
strangers exhaust rank 0's file descriptors, it drops the oldest unauthenticated connection
(or backs off) and keeps serving. :class:`~deeprc_core.comm.tcp.TCPCommunicator` uses both.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import time
from dataclasses import dataclass
from typing import Any

from .. import env_vars
from ..errors import CommError, CommTimeoutError
from ..network import is_wildcard
from . import channel as ch

logger = logging.getLogger("deeprc.comm.tcp")

#: Seconds a new connection has to complete its greeting before rank 0 drops it.
HANDSHAKE_TIMEOUT = 10.0
#: accept() errors that mean "out of descriptors or kernel memory": back off, never die.
_STARVED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Seconds rank 0 waits before accepting again when it is out of descriptors and has none to free.
_STARVED_PAUSE = 0.05


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


@dataclass
class _Greeting:
    """A connection rank 0 accepted that has not yet proved it belongs to the job."""

    addr: Any
    nonce: bytes
    buf: bytearray
    deadline: float


class Gate:
    """Rank 0's side of the meeting: accepts the other ``size - 1`` ranks, each authenticated (:meth:`accept_ranks`)."""

    def __init__(self, size: int, timeout: float) -> None:
        self.size, self.timeout = size, timeout
        #: the authenticated channel of each rank that joined
        self.peers: dict[int, ch.Channel] = {}
        #: the listening socket while ranks join
        self.server: socket.socket | None = None
        #: connections dropped because they failed the handshake
        self.rejected = 0
        #: times accept() found the file descriptors (or kernel buffers) exhausted
        self.fd_exhausted = 0

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
        srv.listen(max(16, self.size))
        srv.setblocking(False)
        return srv

    def accept_ranks(self, host: str, port: int, secret: bytes, deadline: float) -> None:
        """Accept until every rank has authenticated; strangers are dropped without stalling the others."""
        srv = self.server = self._listen(host, port)
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
            while len(self.peers) < self.size - 1:
                now = time.monotonic()
                if now >= deadline:
                    missing = sorted(set(range(1, self.size)) - set(self.peers))
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
            self.server = None

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
            peer, welcome, key = ch.check_hello(secret, g.nonce, bytes(g.buf), self.size)
        except ch.AuthError as exc:
            drop(conn, str(exc))
            return None
        if peer in self.peers:
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
        self.peers[peer] = ch.Channel(conn, key, ch.FROM_ROOT, ch.TO_ROOT)


def join(rank: int, host: str, port: int, secret: bytes, timeout: float, deadline: float) -> ch.Channel:
    """Rank ``rank``'s authenticated channel to rank 0 at ``host:port``, retried until ``deadline``."""
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
            break
        except OSError as exc:
            last = exc
            time.sleep(0.1)
    else:
        raise CommTimeoutError(f"rank {rank}: could not reach rank 0 at {host}:{port} within {timeout:g}s ({last})")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(max(0.1, deadline - time.monotonic()))
    where = f"rank {rank}: rank 0 at {host}:{port}"
    try:
        msg, transcript = ch.hello(secret, bytes(ch.recv_exact(sock, ch.CHALLENGE_SIZE)), rank)
        sock.sendall(msg)
        key = ch.check_welcome(secret, transcript, bytes(ch.recv_exact(sock, 32)))
    except ch.AuthError as exc:
        sock.close()
        raise CommError(f"{where} failed authentication: {exc}") from None
    except TimeoutError:
        sock.close()
        raise CommTimeoutError(f"{where} did not complete the greeting within {timeout:g}s") from None
    except OSError as exc:
        sock.close()
        raise CommError(
            f"{where} closed the connection during authentication ({exc}): do all ranks share the same "
            "DEEPRC_JOB_SECRET (or, on one host, the same user and MASTER_PORT)?"
        ) from None
    sock.settimeout(timeout)
    return ch.Channel(sock, key, ch.TO_ROOT, ch.FROM_ROOT)
