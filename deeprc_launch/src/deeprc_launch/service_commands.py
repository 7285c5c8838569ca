"""The service's commands: ``deeprc-launch up|status|down`` and the internal ``serve``."""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import subprocess
import sys
import time
from typing import Any

from .descriptions import PilotSpec
from .output import Tailer
from .resources import LOCAL_RESOURCE, install_resource_config, is_local
from .service_client import ServiceClient, ServiceError
from .service_files import log_path, read_state, service_dir, socket_path, state_path
from .service_guard import lock_held, remove_stale, signal_service
from .service_server import EXIT_ALREADY_RUNNING, PilotService


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
