"""Loopback socket helpers for tests that play a stranger on a job's port."""

from __future__ import annotations

import socket
import time


def connect_when_listening(port: int, timeout: float = 10.0) -> socket.socket:
    """A connection to 127.0.0.1:``port``, retried until something listens there (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
