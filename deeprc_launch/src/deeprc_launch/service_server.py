"""The pilot service's server: one RP session and pilot, tasks submitted over a Unix socket.

See :mod:`deeprc_launch.service` for the whole picture; the wire protocol is checked by
:mod:`deeprc_launch.service_protocol`, the lock and pid checks live in :mod:`deeprc_launch.service_guard`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import threading
import time
from dataclasses import asdict
from typing import Any

from .descriptions import PilotSpec, task_description
from .jobspec import JobSpec
from .preflight import PreflightError, check_fits
from .runfiles import write_job_env
from .service_files import log_path, read_state, service_dir, socket_path, state_path
from .service_guard import lock_path, process_start_time, remove_stale, take_lock
from .service_protocol import BadRequest, LineReader, job_from_request, parse_request

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
