"""What keeps the pilot service single and its signals safe: the lock, liveness and pid checks.

* One service per ``DEEPRC_HOME``: the serving process holds an exclusive ``fcntl`` lock on
  ``service/service.lock`` for its whole life. A second ``serve`` cannot take it and exits
  before it starts a pilot, so two concurrent ``up``s never orphan one.
* Liveness is that lock: when nobody holds it, any socket or state file left behind is
  stale (a crashed service) and may be removed.
* A pid read from the state file is signalled only if that process still is the service:
  same start time (``/proc/<pid>/stat``) as recorded, and ``deeprc_launch.service`` in its
  command line. A reused pid is never signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO


def lock_path(service_dir: Path) -> Path:
    """The lock file the running service holds."""
    return service_dir / "service.lock"


def take_lock(service_dir: Path) -> IO[str] | None:
    """Take the service lock for this process (keep the returned file open); None if another holds it."""
    fh = lock_path(service_dir).open("a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


def lock_held(service_dir: Path) -> bool:
    """True while some process holds the service lock (the service is alive)."""
    path = lock_path(service_dir)
    if not path.exists():
        return False
    with path.open("a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return False


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/<pid>/stat); None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def is_service_process(pid: object, start_time: object) -> bool:
    """True only if ``pid`` runs now, started at ``start_time`` and is ``deeprc_launch.service``."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        return False
    started = process_start_time(pid)
    if started is None or started != start_time:
        return False
    return "deeprc_launch.service" in _cmdline(pid)


def remove_stale(paths: list[Path]) -> list[Path]:
    """Remove files a dead service left behind; returns those removed."""
    removed = []
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def signal_service(pid: object, start_time: object, sig: int) -> bool:
    """Send ``sig`` to the service process if (and only if) ``pid`` still is it; True if sent."""
    if not is_service_process(pid, start_time):
        return False
    assert isinstance(pid, int)
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True
