"""Authenticated framing for the TCP communicator: a handshake, then MAC'd frames.

Handshake (fixed sizes, so a stranger can make rank 0 read at most :data:`HELLO_SIZE` bytes):

1. rank 0 sends ``MAGIC + nonce0`` (:data:`CHALLENGE_SIZE` bytes);
2. the joining rank sends ``MAGIC + nonce1 + rank + HMAC(secret, "hello" ...)``;
3. rank 0 checks the MAC with :func:`hmac.compare_digest` and answers
   ``HMAC(secret, "welcome" ...)``, so the joining rank knows it reached rank 0 of its
   own job and not a process squatting on the port.

Both sides then derive a per-connection key, and every frame is ``length + MAC`` followed
by the payload; the MAC covers direction, a frame counter, the length and the payload, and
is checked before the payload is handed on (to be unpickled). Nothing from a connection is
deserialised before the handshake succeeded and the frame's MAC matched.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import socket
import struct

from ..errors import CommError

MAGIC = b"DRCTCP01"
_NONCE = 32
_MAC = 32
_RANK = struct.Struct("!I")
_FRAME = struct.Struct("!Q")
_COUNTER = struct.Struct("!Q")

#: What rank 0 sends first.
CHALLENGE_SIZE = len(MAGIC) + _NONCE
#: What a joining rank answers: everything rank 0 ever reads from an unauthenticated peer.
HELLO_SIZE = len(MAGIC) + _NONCE + _RANK.size + _MAC
#: Largest frame a rank accepts (pickled collectives relayed by rank 0; MPI is for more).
MAX_FRAME_BYTES = 8 << 30

#: Directions of a connection (part of every frame's MAC: a frame cannot be reflected back).
TO_ROOT = b"u"
FROM_ROOT = b"d"


class AuthError(CommError):
    """A peer failed the handshake or sent a frame whose MAC does not match."""


def _mac(key: bytes, *parts: bytes | bytearray) -> bytes:
    h = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        h.update(part)
    return h.digest()


def challenge() -> tuple[bytes, bytes]:
    """A fresh nonce and the challenge message that carries it."""
    nonce = secrets.token_bytes(_NONCE)
    return nonce, MAGIC + nonce


def hello(secret: bytes, challenge_msg: bytes, rank: int) -> tuple[bytes, bytes]:
    """The joining rank's answer to ``challenge_msg`` and the transcript both sides MAC."""
    if len(challenge_msg) != CHALLENGE_SIZE or not hmac.compare_digest(challenge_msg[: len(MAGIC)], MAGIC):
        raise AuthError("the process on rank 0's port does not speak Deep RC's TCP protocol")
    transcript = challenge_msg[len(MAGIC) :] + secrets.token_bytes(_NONCE) + _RANK.pack(rank)
    return MAGIC + transcript[_NONCE:] + _mac(secret, b"hello", transcript), transcript


def check_hello(secret: bytes, nonce: bytes, msg: bytes, size: int) -> tuple[int, bytes, bytes]:
    """Verify a joining rank's hello; returns (its rank, the welcome to send, the session key)."""
    if len(msg) != HELLO_SIZE or not hmac.compare_digest(msg[: len(MAGIC)], MAGIC):
        raise AuthError("not a Deep RC greeting")
    body = msg[len(MAGIC) : -_MAC]
    transcript = nonce + body
    if not hmac.compare_digest(msg[-_MAC:], _mac(secret, b"hello", transcript)):
        raise AuthError("wrong MAC: not a rank of this job (or another DEEPRC_JOB_SECRET)")
    (rank,) = _RANK.unpack(body[_NONCE:])
    if not 0 < rank < size:
        raise AuthError(f"authenticated, but claims rank {rank} of a {size}-rank job")
    return rank, _mac(secret, b"welcome", transcript), _mac(secret, b"session", transcript)


def check_welcome(secret: bytes, transcript: bytes, welcome: bytes) -> bytes:
    """Verify rank 0's welcome on the joining side; returns the session key."""
    if not hmac.compare_digest(welcome, _mac(secret, b"welcome", transcript)):
        raise AuthError("rank 0's answer does not prove it knows this job's secret")
    return _mac(secret, b"session", transcript)


def recv_exact(sock: socket.socket, n: int) -> bytearray:
    """Exactly ``n`` bytes, or ConnectionError when the peer closes first."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("peer closed the connection")
        got += k
    return buf


class Channel:
    """One authenticated connection: frames out and in, each MAC'd with a counter."""

    def __init__(self, sock: socket.socket, key: bytes, send_dir: bytes, recv_dir: bytes) -> None:
        self.sock = sock
        self._key = key
        self._send_dir, self._recv_dir = send_dir, recv_dir
        self._sent = self._received = 0

    def settimeout(self, seconds: float | None) -> None:
        """Timeout of the underlying socket."""
        self.sock.settimeout(seconds)

    def fileno(self) -> int:
        """The socket's descriptor (for selectors)."""
        return self.sock.fileno()

    def send(self, payload: bytes) -> None:
        """Send one frame."""
        n = len(payload)
        if n > MAX_FRAME_BYTES:
            raise CommError(f"a {n}-byte message exceeds the TCP communicator's {MAX_FRAME_BYTES}-byte cap; use MPI")
        header = _FRAME.pack(n)
        mac = _mac(self._key, self._send_dir, _COUNTER.pack(self._sent), header, payload)
        self._sent += 1
        self.sock.sendall(header + mac)
        self.sock.sendall(payload)

    def recv(self) -> bytearray:
        """Receive one frame, verified; raises AuthError on a bad MAC or an oversized length."""
        head = recv_exact(self.sock, _FRAME.size + _MAC)
        header, mac = bytes(head[: _FRAME.size]), bytes(head[_FRAME.size :])
        (n,) = _FRAME.unpack(header)
        if n > MAX_FRAME_BYTES:
            raise AuthError(f"frame of {n} bytes exceeds the {MAX_FRAME_BYTES}-byte cap")
        payload = recv_exact(self.sock, n)
        expect = _mac(self._key, self._recv_dir, _COUNTER.pack(self._received), header, payload)
        if not hmac.compare_digest(mac, expect):
            raise AuthError("a frame's MAC does not match (corrupted or forged)")
        self._received += 1
        return payload

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()
