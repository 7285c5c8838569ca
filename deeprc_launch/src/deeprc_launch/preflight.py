"""Checks on the caller's machine before any pilot: a bad request fails in milliseconds, not after one.

Each failure carries the exit code the same mistake gives at run time, so scripts that test
``$?`` see one code whether the check ran here or on a rank:

* the script is missing: 2 (``python missing.py`` exits 2);
* the script does not compile: 1 (an uncaught SyntaxError);
* the interpreter or executable does not exist (local resource): 127 (the bootstrap cannot start it);
* the start folder is missing (local resource): 97 (the bootstrap fails before the command);
* the request does not fit the pilot or the resource: 2 (a usage error, as for a bad flag).

The compile check is :func:`compile` on the script's bytes, which is what :mod:`py_compile` does,
without writing a ``.pyc`` next to the user's script.
"""

from __future__ import annotations

import math
import os
import shutil
import traceback

from .bootstrap import BOOTSTRAP_FAILED
from .descriptions import PilotSpec
from .jobspec import JobSpec
from .resources import is_local, local_cores, resource_info

EXIT_NO_SCRIPT = 2
EXIT_SYNTAX = 1
EXIT_NOT_FOUND = 127
EXIT_USAGE = 2


class PreflightError(Exception):
    """A request that would fail at run time; ``code`` is the exit code it would fail with."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def check_script(path: str) -> None:
    """The script exists and compiles (PreflightError with python's own exit code otherwise)."""
    try:
        with open(path, "rb") as fh:
            source = fh.read()
    except OSError as exc:
        raise PreflightError(f"can't open file {path!r}: [Errno {exc.errno}] {exc.strerror}", EXIT_NO_SCRIPT) from None
    try:
        compile(source, path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:  # ValueError: null bytes in the source
        text = "".join(traceback.format_exception_only(type(exc), exc)).rstrip()
        raise PreflightError(f"{path} does not compile; no pilot was started:\n{text}", EXIT_SYNTAX) from None


def _executable(path: str) -> bool:
    found = shutil.which(path) if os.path.sep not in path else path
    return bool(found) and os.path.isfile(str(found)) and os.access(str(found), os.X_OK)


def check_fits(job: JobSpec, pilot: PilotSpec) -> None:
    """The job's ranks fit the pilot (local) or one node of the resource (cluster); PreflightError if not."""
    if job.cores_per_rank < 1 or job.ranks < 1 or job.gpus_per_rank < 0 or not math.isfinite(job.gpus_per_rank):
        raise PreflightError("--ranks and --cores-per-rank must be at least 1, --gpus-per-rank finite and >= 0", 2)
    if is_local(pilot.resource):
        cores = pilot.cores or local_cores()
        need = job.ranks * job.cores_per_rank
        if need > cores:
            raise PreflightError(
                f"{job.ranks} rank(s) x {job.cores_per_rank} core(s) need {need} cores; the pilot has {cores} "
                "(raise --cores of the pilot or lower --ranks / --cores-per-rank)",
                EXIT_USAGE,
            )
        gpus = pilot.gpus or 0
        if pilot.gpus is not None and job.ranks * job.gpus_per_rank > gpus:
            raise PreflightError(
                f"{job.ranks} rank(s) x {job.gpus_per_rank:g} GPU(s) exceed the pilot's {gpus} GPU(s)", EXIT_USAGE
            )
        return
    info = resource_info(pilot.resource)
    if info is None:
        return  # RP reports an unknown resource itself; nothing to measure the request against
    per_node = job.ranks_per_node or 1
    if info.cores_per_node and per_node * job.cores_per_rank > info.cores_per_node:
        raise PreflightError(
            f"{per_node} rank(s) per node x {job.cores_per_rank} core(s) exceed {pilot.resource}'s "
            f"{info.cores_per_node} cores per node",
            EXIT_USAGE,
        )
    if job.gpus_per_rank and per_node * job.gpus_per_rank > (info.gpus_per_node or 0):
        raise PreflightError(
            f"{per_node} rank(s) per node x {job.gpus_per_rank:g} GPU(s) exceed {pilot.resource}'s "
            f"{info.gpus_per_node or 0} GPUs per node",
            EXIT_USAGE,
        )


def preflight(job: JobSpec, pilot: PilotSpec, module: bool = False) -> None:
    """Every check a request can fail here (see the module docstring); raises PreflightError."""
    local = is_local(pilot.resource)
    cmd = job.command
    # Checked on the caller's machine: on a cluster deeprc-launch needs the shared file system anyway.
    if not module and len(cmd) >= 2 and cmd[0] == job.python and cmd[1].endswith(".py"):
        check_script(cmd[1])
    if local and not _executable(job.python):
        raise PreflightError(f"interpreter {job.python!r} not found or not executable (--python)", EXIT_NOT_FOUND)
    if local and cmd[0] != job.python and not _executable(cmd[0]):
        raise PreflightError(f"{cmd[0]!r}: command not found or not executable", EXIT_NOT_FOUND)
    if local and not os.path.isdir(job.cwd):
        raise PreflightError(f"the start folder {job.cwd} does not exist (--chdir)", BOOTSTRAP_FAILED)
    check_fits(job, pilot)
