"""A pilot that stays up: ``deeprc-launch up|status|down`` and the client ``deeprc-launch script.py`` uses.

``up`` starts ``python -m deeprc_launch.service serve`` in the background. It holds one RP session
and pilot and listens on a Unix socket in ``~/.deeprc/service/`` (folder 0700, socket 0600, and
every connection's peer uid is checked): no TCP port, no other user can submit. The protocol is
one JSON object per line each way: ``status``, ``submit`` (a JobSpec), ``state``, ``cancel``,
``down`` (checked by :mod:`deeprc_launch.service_protocol`: every request gets a reply, a
malformed one an error naming the problem). The service survives a client's Ctrl-C (the
client cancels only its own task); it closes cleanly on ``down``, on SIGTERM, or one minute
before its walltime ends. One service per ``DEEPRC_HOME`` holds a lock for its whole life,
stale files are recognised by that lock, and a pid is signalled only after it is verified
(:mod:`deeprc_launch.service_guard`). Any start-up failure, or SIGTERM/Ctrl-C of ``up``
while the pilot starts, closes the session and so releases the pilot.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
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
from .preflight import PreflightError, check_fits
from .resources import LOCAL_RESOURCE, deeprc_home, install_resource_config, is_local
from .runfiles import write_job_env
from .service_guard import lock_held, lock_path, process_start_time, remove_stale, signal_service, take_lock
from .service_protocol import BadRequest, LineReader, job_from_request, parse_request


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


# ---------------------------------------------------------------------------------- server
#: Exit code of a ``serve`` that found another service holding this DEEPRC_HOME's lock.
EXIT_ALREADY_RUNNING = 3


class _Stop(BaseException):
    """SIGTERM/SIGINT while the pilot is starting: abandon the start and release the pilot.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` inside RP swallows it.
    """


class PilotService:
    """The server: one PilotSession, tasks submitted over the socket."""

    def __init__(self, pilot: PilotSpec, keep_sandbox: bool = False, idle_timeout: float = 0.0) -> None:
        from .session import PilotSession

        self.pilot_spec = pilot
        self.session = PilotSession(pilot, progress=self.log, keep_sandbox=keep_sandbox)
        self.tasks: dict[str, Any] = {}
        self.jobs: dict[str, JobSpec] = {}
        self._lock = threading.Lock()  # guards tasks and jobs (handler threads and RP's)
        self.stop = threading.Event()
        self.started = time.time()
        self.sock: socket.socket | None = None
        self._owns_files = False
        #: close after this many seconds without a client or a running task (0: never)
        self.idle_timeout = idle_timeout
        self._clients = 0
        self._last_active = time.time()

    def log(self, msg: str) -> None:
        """One line in the service log (stdout is the log file)."""
        print(f"[deeprc-launch service {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def write_state(self, state: str) -> None:
        """Publish the service's state for ``up``/``status``/clients."""
        data = {
            "pid": os.getpid(),
            "pid_start": process_start_time(os.getpid()),
            "state": state,
            "resource": self.pilot_spec.resource,
            "socket": str(socket_path()),
            "log": str(log_path()),
            "started": self.started,
            "walltime_min": self.pilot_spec.walltime,
        }
        tmp = state_path().with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, state_path())

    def serve(self) -> int:
        """Take the lock, start the pilot, serve until down/walltime/SIGTERM, then close everything."""
        lock = take_lock(service_dir())
        if lock is None:
            st = read_state()
            self.log(f"another pilot service holds {lock_path(service_dir())} (pid {st.get('pid')}); not starting")
            return EXIT_ALREADY_RUNNING
        try:
            return self._serve_locked()
        finally:
            lock.close()  # releases the lock: only now may another service start

    def _serve_locked(self) -> int:
        # We hold the lock, so whatever socket or state file is there is a dead service's.
        removed = remove_stale([socket_path(), state_path()])
        if removed:
            self.log(f"removed stale {', '.join(str(p) for p in removed)}")
        self._owns_files = True

        def stop_starting(*_: object) -> None:
            raise _Stop()

        signal.signal(signal.SIGTERM, stop_starting)
        signal.signal(signal.SIGINT, stop_starting)
        self.write_state("starting")
        try:
            self._bind()  # before the pilot: a socket that cannot exist fails fast, with no pilot to leak
            try:
                self.session.start()
            except _Stop:
                self.log("stopped while the pilot was starting")
                return 1
            except Exception as exc:  # noqa: BLE001 - reported to `up` through the log and state file
                self.log(f"pilot failed: {exc}")
                self.write_state("failed")
                return 1
            signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
            signal.signal(signal.SIGINT, lambda *_: self.stop.set())
            assert self.sock is not None
            self.sock.listen(16)
            self.sock.settimeout(0.5)
            self.write_state("active")
            self.log(f"pilot active; listening on {socket_path()}")
            self._accept_loop()
            return 0
        except _Stop:
            self.log("stopped")
            return 1
        except Exception as exc:  # noqa: BLE001 - any start-up failure still releases the pilot below
            self.log(f"service failed: {type(exc).__name__}: {exc}")
            return 1
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the shutdown below must run to its end
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            self.shutdown()

    def _bind(self) -> None:
        path = socket_path()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is created 0600: only this user may connect
        try:
            sock.bind(str(path))
        except OSError as exc:
            sock.close()
            raise OSError(
                f"cannot create the service socket {path} ({exc}); set DEEPRC_HOME to a shorter path"
            ) from None
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self.sock = sock

    def _accept_loop(self) -> None:
        assert self.sock is not None
        # Leave a minute for a clean close before the pilot's walltime ends.
        deadline = self.started + max(60.0, self.pilot_spec.walltime * 60 - 60)
        while not self.stop.is_set() and time.time() < deadline and self.session.alive:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                if self._idle_for() > self.idle_timeout > 0:
                    self.log(f"idle for {self.idle_timeout:g} s (no client, no task): closing")
                    break
                continue
            self._last_active = time.time()  # a new client is activity even before its handler counts it
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()
        if time.time() >= deadline:
            self.log("walltime reached")
        elif not self.session.alive and not self.stop.is_set():
            self.log("pilot is gone")

    def _idle_for(self) -> float:
        """Seconds since the last client left (0 while a client is connected or a task runs)."""
        with self._lock:
            busy = self._clients > 0
        if busy or self._live_uids():
            self._last_active = time.time()
            return 0.0
        return time.time() - self._last_active

    def _live_uids(self, uids: list[str] | None = None) -> list[str]:
        with self._lock:
            items = [(u, self.tasks[u]) for u in (self.tasks if uids is None else uids) if u in self.tasks]
        return [u for u, t in items if str(t.state) not in ("DONE", "FAILED", "CANCELED")]

    def shutdown(self) -> None:
        """Cancel live tasks, close the session, remove the socket and state file (ours only)."""
        self.log("closing")
        if self._owns_files:
            with contextlib.suppress(OSError):
                self.write_state("closing")
        if self.sock is not None:
            self.sock.close()
        live = self._live_uids()
        with contextlib.suppress(Exception):
            self.session.cancel(live)
        try:
            self.session.close()
        except Exception as exc:  # noqa: BLE001 - the files below must still go
            self.log(f"closing the session failed: {exc}")
        if self._owns_files:
            remove_stale([socket_path(), state_path()])
        self.log("closed")

    def handle(self, conn: socket.socket) -> None:
        """Serve one client connection (JSON lines); its unfinished tasks are cancelled when it drops.

        Every line gets one reply; a malformed one gets ``{"ok": false, "error": ...}`` naming the
        problem, and any bytes at all leave the service serving.
        """
        mine: list[str] = []
        with self._lock:
            self._clients += 1
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
            if uid != os.getuid():
                self.log(f"refused a connection from uid {uid}")
                return
            reader = LineReader(conn)
            while True:
                try:
                    line = reader.readline()
                except BadRequest as exc:
                    conn.sendall((json.dumps({"ok": False, "error": str(exc)}) + "\n").encode())
                    return  # the stream is out of step: end this connection, not the service
                if line is None:
                    return
                reply, op = self.answer(line, mine)
                conn.sendall((json.dumps(reply) + "\n").encode())
                if op == "down" and reply.get("ok"):
                    self.stop.set()
                    return
        except OSError:
            pass
        finally:
            with self._lock:
                self._clients -= 1
            self._last_active = time.time()
            live = self._live_uids(mine)
            if live and not self.stop.is_set():
                self.log(f"client left: cancelling {live}")
                with contextlib.suppress(Exception):
                    self.session.cancel(live)
            conn.close()

    def answer(self, line: bytes, mine: list[str]) -> tuple[dict[str, Any], str | None]:
        """The reply to one request line (never raises) and its op."""
        try:
            req = parse_request(line)
        except BadRequest as exc:
            return {"ok": False, "error": str(exc)}, None
        except Exception as exc:  # noqa: BLE001 - no line goes unanswered, whatever the parser met
            return {"ok": False, "error": f"request could not be read: {type(exc).__name__}: {exc}"[:500]}, None
        try:
            return self.dispatch(req, mine), req["op"]
        except BadRequest as exc:
            return {"ok": False, "error": str(exc)}, req["op"]
        except Exception as exc:  # noqa: BLE001 - a failing request must not end the service
            self.log(f"{req['op']} failed: {type(exc).__name__}: {exc}")
            return {"ok": False, "error": f"{req['op']} failed: {type(exc).__name__}: {exc}"}, req["op"]

    def _task(self, uid: str) -> Any:
        with self._lock:
            task = self.tasks.get(uid)
        if task is None:
            raise BadRequest(f"unknown task uid {uid!r}")
        return task

    def dispatch(self, req: dict[str, Any], mine: list[str]) -> dict[str, Any]:
        """Answer one checked request (see :func:`parse_request`)."""
        op = req["op"]
        if op == "status":
            with self._lock:
                items = [(uid, t, self.jobs[uid]) for uid, t in self.tasks.items()]
            running = [
                {"uid": uid, "name": job.name, "ranks": job.ranks, "state": str(t.state), "logs": job.run_dir}
                for uid, t, job in items
                if str(t.state) not in ("DONE", "FAILED", "CANCELED")
            ]
            pilot = self.session.pilot
            return {
                "ok": True,
                **read_state(),
                "pilot": asdict(self.pilot_spec),
                "pilot_state": str(pilot.state) if pilot is not None else "NONE",
                "tasks_total": len(items),
                "running": running,
            }
        if op == "submit":
            job = job_from_request(req["job"])
            try:
                check_fits(job, self.pilot_spec)  # a job that can never be placed would wait forever
            except PreflightError as exc:
                raise BadRequest(
                    f"submit: {exc}; that is the running pilot service's pilot (`deeprc-launch down`, then launch "
                    "again for a bigger one)"
                ) from None
            write_job_env(job.run_dir, job.run_id, job.env)  # creates the run folder 0700
            task = self.session.submit([task_description(job, self.pilot_spec.resource)])[0]
            with self._lock:
                self.tasks[task.uid], self.jobs[task.uid] = task, job
            mine.append(task.uid)
            self.log(f"{task.uid}: {' '.join(job.command)} on {job.ranks} rank(s); logs {job.run_dir}")
            return {"ok": True, "uid": task.uid}
        if op == "state":
            t = self._task(req["uid"])
            return {"ok": True, "state": str(t.state), "exit_code": t.exit_code, "stderr": str(t.stderr or "")[-4000:]}
        if op == "cancel":
            self._task(req["uid"])
            self.session.cancel([req["uid"]])
            return {"ok": True}
        return {"ok": True}  # down


# ---------------------------------------------------------------------------------- client
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
            uid = self.request("submit", job=asdict(job))["uid"]
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


# ---------------------------------------------------------------------------------- commands
def _wait_active(proc: subprocess.Popen[bytes], deadline: float, tail: Tailer, quiet: bool) -> dict[str, Any] | None:
    """Wait until a service (ours, or the one that won a race with it) is active; its state, or None."""
    while time.monotonic() < deadline:
        if not quiet:
            tail.poll()
        st = read_state()
        if st.get("state") == "active" and lock_held(service_dir()):
            return st
        if proc.poll() not in (None, EXIT_ALREADY_RUNNING):
            return None
        if proc.poll() == EXIT_ALREADY_RUNNING and not lock_held(service_dir()):
            return None  # the winner is gone too
        time.sleep(0.2)
    return None


def _stop_starting(proc: subprocess.Popen[bytes], rep: Any, log_from: int, resource: str) -> None:
    """Stop a ``serve`` that is still starting its pilot, and wait until it released it.

    A local pilot's processes are then reaped from this side too: a ``serve`` killed after the
    180 s grace (or one that died) cannot reap them itself.
    """
    from .session import reap_local_session

    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=180)
    except subprocess.TimeoutExpired:
        rep(f"pilot service (pid {proc.pid}) did not stop within 180 s; killing it")
        proc.kill()
        proc.wait()
    if is_local(resource):
        with log_path().open("rb") as fh:
            fh.seek(log_from)
            sids = set(re.findall(r"session (rp\.session\.[\w.-]+)\)", fh.read().decode(errors="replace")))
        for sid in sids:
            reap_local_session(sid, rep, settle_s=1.0)


def _up(argv: list[str]) -> int:
    from .console import EXIT_INTERRUPTED, Reporter
    from .resources import add_resource_options

    p = argparse.ArgumentParser(prog="deeprc-launch up", description="start a pilot service that stays up")
    add_resource_options(p)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the pilot")
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=0.0,
        metavar="S",
        help="close after S seconds without a client or a task (default 0: only on down or walltime)",
    )
    ns = p.parse_args(argv)
    rep = Reporter(-1 if ns.quiet else ns.verbose)
    if ns.resource_config:  # as for a run: known to RP before the pilot, and the serve uses its name
        try:
            ns.resource = install_resource_config(ns.resource_config, ns.resource)
        except ValueError as exc:
            print(f"deeprc-launch up: {exc}", file=sys.stderr)
            return 2
        argv = [*argv, "--resource", ns.resource]  # the last --resource wins in the serve's parser
        rep.detail(f"resource {ns.resource} from {ns.resource_config}")
    if lock_held(service_dir()):
        running = read_state()
        rep(f"a pilot service is already {running.get('state')} (pid {running.get('pid')}, {running.get('resource')})")
        return 0
    cmd = [sys.executable, "-m", "deeprc_launch.service", "serve", *argv]
    log = log_path().open("ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    rep(f"pilot service starting (pid {proc.pid}, resource {ns.resource or LOCAL_RESOURCE}); log {log_path()}")
    tail = Tailer(log_path(), sys.stderr, "  ")
    tail._pos = log_from = log.tell()
    try:
        st = _wait_active(proc, time.monotonic() + ns.timeout, tail, ns.quiet)
    except KeyboardInterrupt:
        rep(f"interrupted: stopping the pilot service that was starting (pid {proc.pid}) and its pilot")
        _stop_starting(proc, rep, log_from, ns.resource or LOCAL_RESOURCE)
        return EXIT_INTERRUPTED
    if st is not None:
        if st.get("pid") != proc.pid:
            rep(f"another pilot service started at the same time (pid {st.get('pid')}); using it")
        rep(f"pilot service up: {st['socket']}")
        return 0
    if proc.poll() is None:
        rep("pilot service did not become active in time; stopping it")
        _stop_starting(proc, rep, log_from, ns.resource or LOCAL_RESOURCE)
        return 1
    tail.poll(final=True)
    rep(f"pilot service failed to start (exit {proc.returncode}); see {log_path()}")
    return 1


def _forget_stale() -> None:
    removed = remove_stale([socket_path(), state_path()])
    if removed:
        print(f"removed what a dead pilot service left behind: {', '.join(map(str, removed))}")


def _status(_argv: list[str]) -> int:
    client = ServiceClient.connect()
    if client is None:
        st = read_state()
        if lock_held(service_dir()):
            print(f"pilot service {st.get('state', 'starting')} (pid {st.get('pid')}); log {st.get('log', log_path())}")
            return 0
        _forget_stale()
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
    sdir = service_dir()
    if not lock_held(sdir):
        _forget_stale()
        print("no pilot service running")
        return 0
    st = read_state()
    client = ServiceClient.connect()
    if client is not None:
        with contextlib.suppress(ConnectionError, OSError, ServiceError):
            client.request("down")
        client.close()
    elif not signal_service(st.get("pid"), st.get("pid_start"), signal.SIGTERM):
        print(f"the pilot service's state names pid {st.get('pid')}, which is not the service; not signalled")
        return 1
    deadline = time.monotonic() + 120
    while lock_held(sdir) and time.monotonic() < deadline:
        time.sleep(0.2)
    if lock_held(sdir):
        print(f"pilot service (pid {st.get('pid')}) did not stop in time")
        return 1
    print("pilot service closed")
    return 0


def _serve(argv: list[str]) -> int:
    from .resources import add_resource_options

    p = argparse.ArgumentParser(prog="deeprc_launch.service serve")
    add_resource_options(p)
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--idle-timeout", type=float, default=0.0)
    ns = p.parse_args(argv)
    pilot = PilotSpec(
        ns.resource or LOCAL_RESOURCE, ns.nodes, ns.cores, ns.gpus, ns.queue, ns.project, ns.walltime, ns.sandbox
    )
    return PilotService(pilot, keep_sandbox=ns.keep_sandbox, idle_timeout=ns.idle_timeout).serve()


def service_main(argv: list[str]) -> int:
    """Dispatch ``up``, ``status``, ``down`` (and the internal ``serve``)."""
    cmd, rest = argv[0], argv[1:]
    return {"up": _up, "status": _status, "down": _down, "serve": _serve}[cmd](rest)


if __name__ == "__main__":
    sys.exit(service_main(sys.argv[1:]))
