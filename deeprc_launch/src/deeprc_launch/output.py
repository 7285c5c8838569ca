"""Following a running task: rank 0's output live, every rank's exit, and the failure summary.

The bootstrap writes ``<run dir>/rank-<r>.out|.err|.exit``; this module reads them, so the same
code serves a pilot of our own, the pilot service and the pipeline API.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

#: Exit codes that mean "stopped because another rank failed" (SIGTERM, the launcher's teardown), not
#: "failed first". A SIGKILL is not among them: it comes from outside (the OOM killer, an operator, a
#: fault) and is the root cause its peers then fail on; exit times order the rest.
KILLED_CODES = (128 + 15, -15)


@dataclass
class RankExit:
    """One rank's exit as its bootstrap recorded it."""

    rank: int
    code: int
    time: float
    host: str = ""


@dataclass
class RunResult:
    """How a task ended: exit code (the first failing rank's), failed ranks and their stderr tails."""

    exit_code: int
    state: str
    run_dir: str
    ranks: int
    exits: dict[int, RankExit] = field(default_factory=dict)
    failed: list[int] = field(default_factory=list)
    tails: dict[int, str] = field(default_factory=dict)
    task_stderr: str = ""
    #: why the client ended the task itself (lost ranks), if it did
    reason: str = ""

    @property
    def ok(self) -> bool:
        """True when every rank exited 0."""
        return self.exit_code == 0

    def log_paths(self, rank: int = 0) -> tuple[str, str]:
        """``(stdout, stderr)`` paths of one rank."""
        return (f"{self.run_dir}/rank-{rank}.out", f"{self.run_dir}/rank-{rank}.err")

    def summary(self) -> str:
        """Human-readable failure summary (empty when the task succeeded)."""
        if self.ok:
            return ""
        lines = [f"task {self.state.lower()}: exit code {self.exit_code}"]
        if self.reason:
            lines.append(self.reason)
        if self.failed:
            first = self.failed[0]
            host = self.exits[first].host if first in self.exits else ""
            where = f" (on {host})" if host else ""
            lines[0] += f"; rank {first}{where} failed first; failed ranks: {', '.join(map(str, self.failed))}"
        for rank in self.failed[:4]:
            lines.append(f"--- rank {rank} stderr (tail) [{self.run_dir}/rank-{rank}.err]:")
            lines.append(self.tails.get(rank, "").rstrip() or "(empty)")
        if not self.failed and self.task_stderr.strip():
            lines.append("--- launcher stderr (tail):")
            lines.append(tail_text(self.task_stderr))
        return "\n".join(lines)


def prepare_run_dir(run_dir: str) -> None:
    """Create the run folder and remove what an earlier run left there (a reused ``--log-dir``)."""
    import shutil

    from .runfiles import private_dir

    path = private_dir(Path(run_dir))  # 0700: the ranks' logs and the job's files are this user's alone
    for old in path.glob("rank-*"):
        with contextlib.suppress(OSError):
            old.unlink()
    shutil.rmtree(path / "rendezvous", ignore_errors=True)


def tail_text(text: str, lines: int = 20) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.splitlines()[-lines:])


def read_tail(path: Path, lines: int = 20, max_bytes: int = 64_000) -> str:
    """The last lines of a file (missing file: empty)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            return tail_text(fh.read().decode(errors="replace"), lines)
    except OSError:
        return ""


def read_exits(run_dir: Path) -> dict[int, RankExit]:
    """Every ``rank-<r>.exit`` recorded so far."""
    exits = {}
    for path in run_dir.glob("rank-*.exit"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            rec = json.loads(path.read_text())
            exits[int(rec["rank"])] = RankExit(
                int(rec["rank"]), int(rec["code"]), float(rec["time"]), str(rec.get("host", ""))
            )
    return exits


def failed_ranks(exits: dict[int, RankExit]) -> list[int]:
    """Failing ranks, the one that failed first (on its own, not killed) first."""
    bad = [e for e in exits.values() if e.code != 0]
    bad.sort(key=lambda e: (e.code in KILLED_CODES, e.time, e.rank))
    return [e.rank for e in bad]


def collect(
    run_dir: str, ranks: int, state: str, task_exit: int | None, task_stderr: str = "", reason: str = ""
) -> RunResult:
    """Build the :class:`RunResult` of a finished task from its run folder and RP's verdict."""
    path = Path(run_dir)
    exits = read_exits(path)
    failed = failed_ranks(exits)
    missing = [r for r in range(ranks) if r not in exits]
    if failed:
        code = exits[failed[0]].code
    elif state == "DONE" and not missing and (task_exit in (0, None)):
        code = 0
    else:
        code = task_exit if task_exit not in (0, None) else 1
        failed = missing or failed
    tails = {r: read_tail(path / f"rank-{r}.err") for r in failed}
    return RunResult(code, state, run_dir, ranks, exits, failed, tails, task_stderr, reason)


class Tailer:
    """Follows a growing file and writes its complete new lines to a stream, optionally prefixed."""

    def __init__(self, path: Path, stream: TextIO, prefix: str = "") -> None:
        self.path, self.stream, self.prefix = path, stream, prefix
        self._pos = 0
        self._partial = b""

    def poll(self, final: bool = False) -> None:
        """Write what was appended since the last call (and a last partial line when ``final``)."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._pos)
                data = fh.read()
                self._pos = fh.tell()
        except OSError:
            return
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        if final and self._partial:
            lines.append(self._partial)
            self._partial = b""
        for line in lines:
            self.stream.write(f"{self.prefix}{line.decode(errors='replace')}\n")
        if lines:
            self.stream.flush()


#: Seconds without a heartbeat (``rank-<r>.alive``) and without an exit record after which a rank is lost.
LOST_AFTER_S = 20.0


def lost_ranks(run_dir: Path, ranks: int, now: float | None = None, after: float = LOST_AFTER_S) -> list[int]:
    """Ranks whose bootstrap stopped beating without recording an exit (node or pilot agent died)."""
    now = time.time() if now is None else now
    lost = []
    for r in range(ranks):
        try:
            beat = (run_dir / f"rank-{r}.alive").stat().st_mtime
        except OSError:
            continue  # not started yet
        if now - beat > after and not (run_dir / f"rank-{r}.exit").exists():
            lost.append(r)
    return lost


def follow(
    run_dir: str,
    ranks: int,
    get_state: Callable[[], tuple[str, int | None, str]],
    cancel: Callable[[], None],
    stream: bool = True,
    prefix: bool = False,
    poll_s: float = 0.05,
    out: TextIO | None = None,
    err: TextIO | None = None,
    lost_after: float = LOST_AFTER_S,
) -> RunResult:
    """Stream rank 0's output while the task runs; on Ctrl-C cancel it; return its result.

    ``get_state()`` returns ``(state, exit_code, stderr)`` with RP's state names. Ranks that
    stop beating for ``lost_after`` seconds without an exit record (the pilot agent or their
    node died, and RP may not notice for minutes) fail the task: it is cancelled and the
    result names them.
    """
    path = Path(run_dir)
    tailers = []
    if stream:
        pre = "[rank 0] " if prefix else ""
        tailers = [
            Tailer(path / "rank-0.out", out or sys.stdout, pre),
            Tailer(path / "rank-0.err", err or sys.stderr, pre),
        ]
    checked = time.monotonic()
    reason = ""
    try:
        while True:
            state, code, stderr = get_state()
            for t in tailers:
                t.poll()
            if state in ("DONE", "FAILED", "CANCELED"):
                break
            if time.monotonic() - checked > 1.0:
                checked = time.monotonic()
                lost = lost_ranks(path, ranks, after=lost_after)
                exits = read_exits(path)
                if not lost and len(exits) == ranks and time.time() - max(e.time for e in exits.values()) > lost_after:
                    # Every rank is done, yet RP still says the task runs: its agent stopped reporting.
                    with contextlib.suppress(Exception):
                        cancel()
                    bad = any(e.code != 0 for e in exits.values())
                    state, code = ("FAILED", None) if bad else ("DONE", 0)
                    reason = (
                        f"every rank recorded its exit {lost_after:g}s ago but the pilot still reports the task "
                        "running: the pilot agent died or hangs"
                    )
                    break
                if lost:
                    with contextlib.suppress(Exception):
                        cancel()
                    state, code = "FAILED", 1
                    reason = (
                        f"rank(s) {lost} stopped without recording an exit (no heartbeat in "
                        f"{path}/rank-<r>.alive for {lost_after:g}s): the pilot agent or the node died; "
                        "the task was cancelled"
                    )
                    break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        cancel()
        for t in tailers:
            t.poll(final=True)
        raise
    for t in tailers:
        t.poll(final=True)
    return collect(run_dir, ranks, state, code, stderr, reason)
