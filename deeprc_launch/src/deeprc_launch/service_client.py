"""The pilot service's client: what ``deeprc-launch script.py`` uses when a service is up."""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from .jobspec import JobSpec, job_to_wire
from .output import follow, prepare_run_dir
from .resources import deeprc_home


class ServiceError(RuntimeError):
    """The service answered a request with an error (the message is the service's)."""


class ServiceClient:
    """A connection to the running service."""

    def __init__(self, sock: socket.socket, path: Path) -> None:
        self.sock, self.socket_path = sock, path
        self._rfile = sock.makefile("r")
        self._lock = threading.Lock()

    @classmethod
    def connect(cls) -> ServiceClient | None:
        """Connect to the running service, or None when there is none."""
        path = deeprc_home() / "service" / "pilot.sock"
        if not path.exists():
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
        except OSError:
            sock.close()
            return None
        return cls(sock, path)

    def request(self, op: str, **kw: Any) -> dict[str, Any]:
        """Send one request, return the reply."""
        with self._lock:
            self.sock.sendall((json.dumps({"op": op, **kw}) + "\n").encode())
            line = self._rfile.readline()
        if not line:
            raise ConnectionError("the pilot service closed the connection")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise ServiceError(f"the pilot service refused {op}: {reply.get('error')}")
        return reply

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()

    def run(self, job: JobSpec, ns: argparse.Namespace, rep: Any) -> int:
        """Submit ``job``, stream rank 0, return the exit code (Ctrl-C cancels only this task)."""
        from .console import EXIT_INTERRUPTED, report

        prepare_run_dir(job.run_dir)
        try:
            uid = self.request("submit", job=job_to_wire(job))["uid"]
        except (ServiceError, ConnectionError) as exc:
            self.close()
            print(f"deeprc-launch: {exc}", file=sys.stderr)
            return 2
        rep(f"task {uid} submitted on {job.ranks} rank(s)")
        shown: set[str] = set()

        def get_state() -> tuple[str, int | None, str]:
            r = self.request("state", uid=uid)
            if r["state"] == "AGENT_EXECUTING" and "run" not in shown:
                shown.add("run")
                rep.detail(f"task {uid} running")
            return r["state"], r["exit_code"], r["stderr"]

        def cancel() -> None:
            self.request("cancel", uid=uid)

        try:
            result = follow(job.run_dir, job.ranks, get_state, cancel, prefix=ns.prefix)
        except KeyboardInterrupt:
            rep(f"interrupted: task {uid} cancelled; the pilot service stays up")
            return EXIT_INTERRUPTED
        finally:
            self.close()
        rep(f"task {uid} {result.state.lower()}")
        return report(result, rep)
