"""What every ``deeprc-launch`` command prints and exits with: progress lines, the run report, exit codes.

Shared by the one-shot run (:mod:`deeprc_launch.cli`) and the pilot service
(:mod:`deeprc_launch.service_client`), so that neither imports the other.
"""

from __future__ import annotations

import sys
import time

from .output import RunResult

#: Exit code after Ctrl-C (the shell's convention for SIGINT).
EXIT_INTERRUPTED = 130
#: Exit code when the pilot could not be started.
EXIT_PILOT_FAILED = 75


class Reporter:
    """Progress lines on stderr (``-q`` silences them, ``-v`` adds detail)."""

    def __init__(self, verbosity: int = 0) -> None:
        self.verbosity = verbosity
        self.t0 = time.monotonic()

    def __call__(self, msg: str) -> None:
        """Print one progress line."""
        if self.verbosity >= 0:
            print(f"[deeprc-launch {time.monotonic() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    def detail(self, msg: str) -> None:
        """Print only with -v."""
        if self.verbosity > 0:
            self(msg)


def report(result: RunResult, rep: Reporter) -> int:
    """Print where the logs are and, on failure, which ranks failed with their stderr tails."""
    rep(f"logs of every rank: {result.run_dir}/rank-<r>.out|.err")
    if not result.ok:
        print(result.summary(), file=sys.stderr, flush=True)
    return result.exit_code
