"""A pilot that stays up: ``deeprc-launch up|status|down`` and the client ``deeprc-launch script.py`` uses.

``up`` starts ``python -m deeprc_launch.service serve`` in the background. It holds one RP session
and pilot and listens on a Unix socket in ``~/.deeprc/service/`` (folder 0700, socket 0600, and
every connection's peer uid is checked): no TCP port, no other user can submit. The protocol is
one JSON object per line each way: ``status``, ``submit`` (a JobSpec), ``state``, ``cancel``,
``down``. The service survives a client's Ctrl-C (the client cancels only its own task); it
closes cleanly on ``down``, on SIGTERM, or one minute before its walltime ends.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .descriptions import JobSpec, PilotSpec, task_description
from .output import Tailer, follow, prepare_run_dir
from .resources import LOCAL_RESOURCE, deeprc_home


def service_dir() -> Path:
    """Folder of the service's socket, state file and log (created 0700)."""
    path = deeprc_home() / "service"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def socket_path() -> Path:
    """The service's Unix socket."""
    return service_dir() / "pilot.sock"


def state_path() -> Path:
    """JSON file describing the running service (pid, resource, log, state)."""
    return service_dir() / "state.json"


def log_path() -> Path:
    """The service's log file."""
    return service_dir() / "service.log"


def read_state() -> dict[str, Any]:
    """The service's state file ({} when none)."""
    try:
        return json.loads(state_path().read_text())
    except (OSError, ValueError):
        return {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------- server
class PilotService:
    """The server: one PilotSession, tasks submitted over the socket."""

    def __init__(self, pilot: PilotSpec, keep_sandbox: bool = False) -> None:
        from .session import PilotSession

        self.pilot_spec = pilot
        self.session = PilotSession(pilot, progress=self.log, keep_sandbox=keep_sandbox)
        self.tasks: dict[str, Any] = {}
        self.jobs: dict[str, JobSpec] = {}
        self.stop = threading.Event()
        self.started = time.time()
        self.sock: socket.socket | None = None

    def log(self, msg: str) -> None:
        """One line in the service log (stdout is the log file)."""
        print(f"[deeprc-launch service {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def write_state(self, state: str) -> None:
        """Publish the service's state for ``up``/``status``/clients."""
        data = {
            "pid": os.getpid(),
            "state": state,
            "resource": self.pilot_spec.resource,
            "socket": str(socket_path()),
            "log": str(log_path()),
            "started": self.started,
            "walltime_min": self.pilot_spec.walltime,
        }
        tmp = state_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, state_path())

    def serve(self) -> int:
        """Start the pilot, serve until down/walltime/SIGTERM, then close everything."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop.set())
        self.write_state("starting")
        try:
            self.session.start()
        except Exception as exc:  # noqa: BLE001 - reported to `up` through the state file
            self.log(f"pilot failed: {exc}")
            self.write_state("failed")
            self.session.close()
            return 1
        path = socket_path()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        old = os.umask(0o177)  # the socket is created 0600: only this user may connect
        try:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self.sock.listen(16)
        self.sock.settimeout(0.5)
        self.write_state("active")
        self.log(f"pilot active; listening on {path}")
        # Leave a minute for a clean close before the pilot's walltime ends.
        deadline = self.started + max(60.0, self.pilot_spec.walltime * 60 - 60)
        try:
            while not self.stop.is_set() and time.time() < deadline and self.session.alive:
                try:
                    conn, _ = self.sock.accept()
                except TimeoutError:
                    continue
                threading.Thread(target=self.handle, args=(conn,), daemon=True).start()
            if time.time() >= deadline:
                self.log("walltime reached")
            elif not self.session.alive and not self.stop.is_set():
                self.log("pilot is gone")
        finally:
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        """Cancel live tasks, close the session, remove the socket and state file."""
        self.write_state("closing")
        self.log("closing")
        if self.sock is not None:
            self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            socket_path().unlink()
        live = [uid for uid, t in self.tasks.items() if str(t.state) not in ("DONE", "FAILED", "CANCELED")]
        with contextlib.suppress(Exception):
            self.session.cancel(live)
        self.session.close()
        with contextlib.suppress(FileNotFoundError):
            state_path().unlink()
        self.log("closed")

    def handle(self, conn: socket.socket) -> None:
        """Serve one client connection (JSON lines); its unfinished tasks are cancelled when it drops."""
        mine: list[str] = []
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
            if uid != os.getuid():
                return
            rfile = conn.makefile("r")
            for line in rfile:
                req = json.loads(line)
                reply = self.dispatch(req, mine)
                conn.sendall((json.dumps(reply) + "\n").encode())
                if req.get("op") == "down":
                    self.stop.set()
                    return
        except (OSError, ValueError):
            pass
        finally:
            live = [u for u in mine if str(self.tasks[u].state) not in ("DONE", "FAILED", "CANCELED")]
            if live and not self.stop.is_set():
                self.log(f"client left: cancelling {live}")
                with contextlib.suppress(Exception):
                    self.session.cancel(live)
            conn.close()

    def dispatch(self, req: dict[str, Any], mine: list[str]) -> dict[str, Any]:
        """Answer one request."""
        op = req.get("op")
        if op == "status":
            running = [
                {
                    "uid": uid,
                    "name": self.jobs[uid].name,
                    "ranks": self.jobs[uid].ranks,
                    "state": str(t.state),
                    "logs": self.jobs[uid].run_dir,
                }
                for uid, t in self.tasks.items()
                if str(t.state) not in ("DONE", "FAILED", "CANCELED")
            ]
            return {
                "ok": True,
                **read_state(),
                "pilot": asdict(self.pilot_spec),
                "pilot_state": str(self.session.pilot.state),
                "tasks_total": len(self.tasks),
                "running": running,
            }
        if op == "submit":
            job = JobSpec(**req["job"])
            Path(job.run_dir).mkdir(parents=True, exist_ok=True)
            task = self.session.submit([task_description(job, self.pilot_spec.resource)])[0]
            self.tasks[task.uid], self.jobs[task.uid] = task, job
            mine.append(task.uid)
            self.log(f"{task.uid}: {' '.join(job.command)} on {job.ranks} rank(s); logs {job.run_dir}")
            return {"ok": True, "uid": task.uid}
        if op == "state":
            t = self.tasks[req["uid"]]
            return {"ok": True, "state": str(t.state), "exit_code": t.exit_code, "stderr": str(t.stderr or "")[-4000:]}
        if op == "cancel":
            self.session.cancel([req["uid"]])
            return {"ok": True}
        if op == "down":
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}"}


# ---------------------------------------------------------------------------------- client
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
        return json.loads(line)

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()

    def run(self, job: JobSpec, ns: argparse.Namespace, rep: Any) -> int:
        """Submit ``job``, stream rank 0, return the exit code (Ctrl-C cancels only this task)."""
        from .cli import EXIT_INTERRUPTED, report

        prepare_run_dir(job.run_dir)
        uid = self.request("submit", job=asdict(job))["uid"]
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


# ---------------------------------------------------------------------------------- commands
def _up(argv: list[str]) -> int:
    from .cli import Reporter, add_resource_options

    p = argparse.ArgumentParser(prog="deeprc-launch up", description="start a pilot service that stays up")
    add_resource_options(p)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the pilot")
    ns = p.parse_args(argv)
    rep = Reporter(-1 if ns.quiet else ns.verbose)
    st = read_state()
    if st and _pid_alive(int(st.get("pid", 0))):
        rep(f"a pilot service is already {st.get('state')} (pid {st['pid']}, {st.get('resource')})")
        return 0
    cmd = [sys.executable, "-m", "deeprc_launch.service", "serve", *argv]
    log = log_path().open("ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    rep(f"pilot service starting (pid {proc.pid}, resource {ns.resource or LOCAL_RESOURCE}); log {log_path()}")
    tail = Tailer(log_path(), sys.stderr, "  ")
    tail._pos = log.tell()
    deadline = time.monotonic() + ns.timeout
    while time.monotonic() < deadline:
        if not ns.quiet:
            tail.poll()
        st = read_state()
        if st.get("pid") == proc.pid and st.get("state") == "active":
            rep(f"pilot service up: {st['socket']}")
            return 0
        if proc.poll() is not None:
            tail.poll(final=True)
            rep(f"pilot service failed to start (exit {proc.returncode}); see {log_path()}")
            return 1
        time.sleep(0.2)
    proc.terminate()
    rep("pilot service did not become active in time")
    return 1


def _status(_argv: list[str]) -> int:
    client = ServiceClient.connect()
    if client is None:
        st = read_state()
        if st and _pid_alive(int(st.get("pid", 0))):
            print(f"pilot service {st.get('state')} (pid {st['pid']}); log {st.get('log')}")
            return 0
        print("no pilot service running")
        return 1
    try:
        st = client.request("status")
    finally:
        client.close()
    left = st["started"] + st["walltime_min"] * 60 - time.time()
    pilot = st["pilot"]
    print(
        f"pilot service pid {st['pid']}: {st['pilot_state']} on {st['resource']} "
        f"(cores {pilot.get('cores') or '-'}, nodes {pilot.get('nodes') or '-'}, gpus {pilot.get('gpus') or 0}), "
        f"{max(0, left) / 60:.0f} min of walltime left"
    )
    print(f"socket {st['socket']}; log {st['log']}; tasks so far {st['tasks_total']}")
    for t in st["running"]:
        print(f"  {t['uid']} {t['state']} {t['name']} ranks={t['ranks']} logs={t['logs']}")
    return 0


def _down(_argv: list[str]) -> int:
    st = read_state()
    client = ServiceClient.connect()
    if client is None:
        if st and _pid_alive(int(st.get("pid", 0))):
            os.kill(int(st["pid"]), signal.SIGTERM)
        else:
            print("no pilot service running")
            return 0
    else:
        with contextlib.suppress(ConnectionError, OSError):
            client.request("down")
        client.close()
    pid = int(st.get("pid", 0))
    deadline = time.monotonic() + 120
    while pid and _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    if pid and _pid_alive(pid):
        print(f"pilot service (pid {pid}) did not stop in time")
        return 1
    print("pilot service closed")
    return 0


def _serve(argv: list[str]) -> int:
    from .cli import add_resource_options

    p = argparse.ArgumentParser(prog="deeprc_launch.service serve")
    add_resource_options(p)
    p.add_argument("--timeout", type=float, default=900.0)
    ns = p.parse_args(argv)
    pilot = PilotSpec(
        ns.resource or LOCAL_RESOURCE, ns.nodes, ns.cores, ns.gpus, ns.queue, ns.project, ns.walltime, ns.sandbox
    )
    return PilotService(pilot, keep_sandbox=ns.keep_sandbox).serve()


def service_main(argv: list[str]) -> int:
    """Dispatch ``up``, ``status``, ``down`` (and the internal ``serve``)."""
    cmd, rest = argv[0], argv[1:]
    return {"up": _up, "status": _status, "down": _down, "serve": _serve}[cmd](rest)


if __name__ == "__main__":
    sys.exit(service_main(sys.argv[1:]))
