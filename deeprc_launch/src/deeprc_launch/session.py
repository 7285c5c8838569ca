"""One RADICAL-Pilot session and pilot, with progress lines and a clean shutdown.

RP facts this module works around (radical.pilot 1.103):

* the client needs the virtualenv's ``bin`` on PATH and VIRTUAL_ENV set, else
  ``radical-pilot-bridge`` is not found and the client hangs;
* ``exit_on_error`` (default True) SIGTERMs the client when the pilot fails: it is off, and
  a failed pilot is reported as an error instead;
* on a local pilot all traffic stays on loopback (RADICAL_DEFAULT_IFACE=lo) and nothing is
  profiled (profiling contacts an NTP pool);
* sandboxes go to ``~/radical.pilot.sandbox/<sid>`` and the client's session folder; both are
  removed on close unless ``keep_sandbox``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .descriptions import PilotSpec, pilot_description
from .resources import LOCAL_MPI_ENV, deeprc_home, is_local, write_local_config

Progress = Callable[[str], None]

logger = logging.getLogger("deeprc_launch.session")

#: Task states after which a task never changes again.
FINAL_STATES = ("DONE", "FAILED", "CANCELED")


class PilotError(RuntimeError):
    """The pilot did not become active (or failed later)."""


def _quiet(_msg: str) -> None:
    pass


def prepare_environment(pilot: PilotSpec, verbose: bool = False) -> None:
    """Set the process environment RP's client and a local agent need (idempotent)."""
    bindir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if bindir not in path.split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bindir, path]) if path else bindir
    if sys.prefix != sys.base_prefix:
        os.environ.setdefault("VIRTUAL_ENV", sys.prefix)
    home = deeprc_home()
    sessions = home / "sessions"
    sessions.mkdir(parents=True, exist_ok=True)
    os.environ["RADICAL_CONFIG_USER_DIR"] = str(write_local_config(pilot.cores, pilot.gpus))
    # The client's session folder goes under ~/.deeprc, not into the user's working directory.
    os.environ.setdefault("RADICAL_PILOT_BASE", str(sessions))
    os.environ.setdefault("RADICAL_PILOT_SESSION_BASE", str(sessions))
    os.environ.setdefault("RADICAL_PROFILE", "FALSE")
    os.environ.setdefault("RADICAL_REPORT", "FALSE")
    os.environ.setdefault("RADICAL_LOG_LVL", "INFO" if verbose else "WARNING")
    os.environ.setdefault("RADICAL_UTILS_NTPHOST", "127.0.0.1")
    if is_local(pilot.resource):
        os.environ["RADICAL_DEFAULT_IFACE"] = "lo"
        for key, value in LOCAL_MPI_ENV.items():
            os.environ.setdefault(key, value)


class PilotSession:
    """A started RP session with one pilot and one task manager.

    Use :meth:`start`, then :meth:`submit` and :meth:`close` (or the context manager).
    """

    def __init__(
        self, pilot: PilotSpec, progress: Progress | None = None, keep_sandbox: bool = False, verbose: bool = False
    ) -> None:
        self.spec = pilot
        self.progress = progress or _quiet
        self.keep_sandbox = keep_sandbox
        self.verbose = verbose
        self.session: Any = None
        self.pmgr: Any = None
        self.tmgr: Any = None
        self.pilot: Any = None
        self.started_s: float | None = None
        #: seconds of each start-up phase (client session, task manager, pilot to active)
        self.phases: dict[str, float] = {}
        self._closed = False
        self._lock = threading.Lock()
        self._task_callbacks: list[Callable[[Any, str], None]] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 900.0) -> PilotSession:
        """Create the session, submit the pilot and wait until it is active; raises PilotError."""
        prepare_environment(self.spec, self.verbose)
        import radical.pilot as rp

        t0 = time.monotonic()
        self.session = rp.Session()
        self.pmgr = rp.PilotManager(session=self.session)
        self.phases["client session"] = time.monotonic() - t0
        pd = rp.PilotDescription(pilot_description(self.spec))
        self.progress(f"pilot submitted to {self.spec.resource} (session {self.session.uid})")
        self.pilot = self.pmgr.submit_pilots(pd)
        self.pilot.register_callback(self._on_pilot)
        # The task manager's components start while the pilot's agent bootstraps, not before it.
        t1 = time.monotonic()
        self.tmgr = rp.TaskManager(session=self.session)
        self.tmgr.register_callback(self._on_task)
        self.tmgr.add_pilots(self.pilot)
        self.phases["task manager (overlapping the pilot's bootstrap)"] = time.monotonic() - t1
        state = self.pilot.wait(state=[rp.PMGR_ACTIVE, rp.FAILED, rp.CANCELED, rp.DONE], timeout=timeout)
        if state != rp.PMGR_ACTIVE:
            log = getattr(self.pilot, "log", None)
            raise PilotError(f"pilot ended in state {state} after {time.monotonic() - t0:.0f}s {log or ''}".strip())
        self.started_s = time.monotonic() - t0
        self.phases["pilot submitted to active"] = self.started_s - self.phases["client session"]
        self.progress(
            f"pilot active after {self.started_s:.1f}s ("
            + ", ".join(f"{k} {v:.1f}s" for k, v in self.phases.items())
            + ")"
        )
        return self

    def _on_pilot(self, pilot: Any, state: str) -> None:
        if state in ("FAILED", "CANCELED", "DONE") and not self._closed:
            self.progress(f"pilot {state.lower()}")

    def _on_task(self, task: Any, state: str) -> None:
        for cb in list(self._task_callbacks):
            try:
                cb(task, state)
            except Exception:  # noqa: BLE001 - a callback must never break RP's thread, but must be seen
                uid = getattr(task, "uid", "?")
                logger.exception("task-state callback %r failed for %s -> %s", cb, uid, state)
                self.progress(f"warning: a task-state callback failed for {uid} -> {state}: {sys.exc_info()[1]!r}")

    def on_task_state(self, callback: Callable[[Any, str], None]) -> None:
        """Call ``callback(task, state)`` on every task state change."""
        self._task_callbacks.append(callback)

    @property
    def alive(self) -> bool:
        """True while the pilot is active."""
        return self.pilot is not None and self.pilot.state == "PMGR_ACTIVE" and not self._closed

    # ------------------------------------------------------------------ tasks
    def submit(self, tds: Iterable[dict[str, Any]]) -> list[Any]:
        """Submit task descriptions (dicts); returns RP task objects."""
        import radical.pilot as rp

        return self.tmgr.submit_tasks([rp.TaskDescription(td) for td in tds])

    def cancel(self, uids: list[str]) -> None:
        """Cancel tasks (their ranks get SIGTERM, then SIGKILL)."""
        if uids and self.tmgr is not None:
            self.tmgr.cancel_tasks(uids)

    @staticmethod
    def task_sandbox(task: Any) -> str:
        """Local path of a task's sandbox (RP reports a URL)."""
        sbox = str(task.sandbox or "")
        return sbox[len("file://localhost") :] if sbox.startswith("file://localhost") else sbox

    # ------------------------------------------------------------------ shutdown
    def close(self) -> None:
        """Close the session (terminates the pilot) and remove sandboxes unless kept."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self.session is None:
            return
        sid = self.session.uid
        sandbox = None
        try:
            if self.pilot is not None and self.pilot.pilot_sandbox:
                sandbox = str(self.pilot.pilot_sandbox)
        except Exception:  # noqa: BLE001
            sandbox = None
        try:
            self.session.close(download=False, terminate=True)
        finally:
            if is_local(self.spec.resource):
                reap_local_session(sid, self.progress)
            if not self.keep_sandbox:
                self._remove_sandboxes(sid, sandbox)

    def _remove_sandboxes(self, sid: str, pilot_sandbox: str | None) -> None:
        paths = [Path(os.environ.get("RADICAL_PILOT_BASE", os.getcwd())) / sid]
        if is_local(self.spec.resource):
            paths.append(Path.home() / "radical.pilot.sandbox" / sid)
            if pilot_sandbox and pilot_sandbox.startswith("file://"):
                paths.append(Path(pilot_sandbox.split("localhost", 1)[-1]).parent)
        for path in paths:
            if path.name == sid:
                shutil.rmtree(path, ignore_errors=True)

    def __enter__(self) -> PilotSession:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def session_roots(sid: str) -> list[str]:
    """The folders a local pilot of session ``sid`` works in (its sandbox and the client's session folder)."""
    return [
        str(Path.home() / "radical.pilot.sandbox" / sid),
        str(Path(os.environ.get("RADICAL_PILOT_BASE", os.getcwd())) / sid),
    ]


def _processes_in(roots: list[str]) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:  # gone, a zombie, or not ours
            continue
        if any(cwd == r or cwd.startswith(r + "/") for r in roots):
            found.add(int(entry.name))
    return found


def reap_local_session(sid: str, progress: Progress = _quiet, settle_s: float = 2.0, timeout_s: float = 30.0) -> int:
    """End every process a local pilot of session ``sid`` left behind; returns how many were ended.

    A process counts when its working folder lies inside the session's folders (:func:`session_roots`).
    Each round freezes what it finds (SIGSTOP) and rescans before killing, because a bootstrapper
    ended between a scan and its kill may already have forked the agent, which then outlives a
    single snapshot; rounds repeat until the folders stay empty for ``settle_s``.
    """
    roots = session_roots(sid)
    ended: set[int] = set()
    deadline = time.monotonic() + timeout_s
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        found = _processes_in(roots)
        if not found:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= settle_s:
                break
            time.sleep(0.2)
            continue
        quiet_since = None
        frozen: set[int] = set()
        while found - frozen:  # freeze until a rescan finds nobody new: frozen processes cannot fork
            for pid in found - frozen:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGSTOP)
            frozen |= found
            found = _processes_in(roots)
        for pid in frozen:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        ended |= frozen
    left = _processes_in(roots)
    if ended:
        progress(f"ended {len(ended)} process(es) the pilot left behind")
    if left:
        progress(
            f"warning: {len(left)} process(es) of session {sid} still running after {timeout_s:.0f} s: {sorted(left)}"
        )
    return len(ended)
