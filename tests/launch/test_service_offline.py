"""The pilot service without a pilot: every request gets a reply, the lock, pid checks, callback errors."""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from deeprc_launch.descriptions import JobSpec, PilotSpec
from deeprc_launch.service import PilotService
from deeprc_launch.service_guard import is_service_process, lock_held, process_start_time, signal_service, take_lock
from deeprc_launch.service_protocol import MAX_LINE, BadRequest, job_from_request, parse_request
from deeprc_launch.session import PilotSession


@pytest.mark.parametrize(
    ("line", "match"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{", "not JSON"),
        (b"[]", "JSON object"),
        (b'"down"', "JSON object"),
        (b'{"op": 3}', "unknown op 3"),
        (b'{"op": "launch"}', "unknown op 'launch'"),
        (b'{"op": "submit"}', "missing field 'job'"),
        (b'{"op": "state", "uid": 5}', "uid must be a string"),
    ],
)
def test_malformed_requests_are_named(line: bytes, match: str) -> None:
    with pytest.raises(BadRequest, match=match):
        parse_request(line)


def test_job_fields_are_checked() -> None:
    good = {"command": ["python", "x.py"], "run_dir": "/tmp/x", "run_id": "r1"}
    assert job_from_request(good).ranks == 1
    for bad, match in [
        ({"ranks": 2}, "no 'command'"),
        ({**good, "ranks": "2"}, "'ranks' must be a positive integer"),
        ({**good, "ranks": 0}, "'ranks' must be a positive integer"),
        ({**good, "command": []}, "'command' must be a non-empty list"),
        ({**good, "env": {"A": 1}}, "'env' must be an object of strings"),
        ({**good, "run_dir": "rel"}, "absolute path"),
        ({**good, "bogus": 1}, "unknown job field"),
        ("job", "job must be an object"),
    ]:
        with pytest.raises(BadRequest, match=match):
            job_from_request(bad)


def _talk(service: PilotService, lines: list[bytes]) -> list[dict[str, Any]]:
    a, b = socket.socketpair()
    t = threading.Thread(target=service.handle, args=(b,), daemon=True)
    t.start()
    replies = []
    with a, a.makefile("rb") as rf:
        for line in lines:
            a.sendall(line + b"\n")
            replies.append(json.loads(rf.readline()))
    t.join(5)
    return replies


def test_every_line_gets_a_reply_and_the_service_survives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPRC_HOME", str(tmp_path))
    service = PilotService(PilotSpec())
    rng = random.Random(14)
    fuzz = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))).replace(b"\n", b" ") for _ in range(200)]
    fuzz += [
        b'{"op": "state", "uid": "task.000000"}',
        b'{"op": "cancel", "uid": "nope"}',
        b'{"op": "submit", "job": 1}',
    ]
    replies = _talk(service, [*fuzz, b'{"op": "status"}'])
    assert len(replies) == len(fuzz) + 1
    assert all(r["ok"] is False and r["error"] for r in replies[:-1])
    assert "unknown task uid 'task.000000'" in replies[-4]["error"]
    assert replies[-1]["ok"] is True and replies[-1]["tasks_total"] == 0
    # An endless line ends that connection with an error reply, not the service.
    a, b = socket.socketpair()
    t = threading.Thread(target=service.handle, args=(b,), daemon=True)
    t.start()
    with a:
        a.sendall(b"x" * (MAX_LINE + 70000))
        assert "longer than" in json.loads(a.makefile("rb").readline())["error"]
    t.join(5)
    assert not t.is_alive()


def test_one_service_per_home(tmp_path: Path) -> None:
    held = take_lock(tmp_path)
    assert held is not None and lock_held(tmp_path)
    assert take_lock(tmp_path) is None
    code = "import sys, pathlib; from deeprc_launch.service_guard import take_lock; "
    code += "sys.exit(take_lock(pathlib.Path(sys.argv[1])) is None)"
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path)]).returncode == 1  # another process: refused
    held.close()
    assert not lock_held(tmp_path)
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path)]).returncode == 0


def test_pids_are_verified_before_any_signal() -> None:
    me = os.getpid()
    assert process_start_time(me) is not None
    assert not is_service_process(me, process_start_time(me))  # pytest is not the service
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        start = process_start_time(sleeper.pid)
        assert not signal_service(sleeper.pid, start, 15)  # right start time, wrong command line
        assert not signal_service(sleeper.pid, (start or 0) + 1, 15)  # a reused pid: another start time
        assert not signal_service("1", start, 15) and not signal_service(None, None, 15)
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_callback_errors_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    said: list[str] = []
    session = PilotSession(PilotSpec(), progress=said.append)

    def broken(task: Any, state: str) -> None:
        raise RuntimeError("callback bug")

    seen: list[str] = []
    session.on_task_state(broken)
    session.on_task_state(lambda t, s: seen.append(s))

    class Task:
        uid = "task.000001"

    with caplog.at_level(logging.ERROR, logger="deeprc_launch.session"):
        session._on_task(Task(), "DONE")
    assert seen == ["DONE"]  # the next callback still ran
    assert "task.000001" in caplog.text and "callback bug" in caplog.text
    assert any("callback bug" in s for s in said)


def test_jobspec_round_trips_through_the_protocol() -> None:
    from dataclasses import asdict

    job = JobSpec(command=["python", "-c", "pass"], ranks=2, run_dir="/tmp/r", env={"A": "b"})
    assert job_from_request(json.loads(json.dumps(asdict(job)))) == job


def _cli(args: list[str], home: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEEPRC_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "deeprc_launch", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_stale_files_are_recognised_and_a_reused_pid_is_never_signalled(tmp_path: Path) -> None:
    sdir = tmp_path / "service"
    sdir.mkdir(mode=0o700)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # What a crashed service leaves: a socket file nobody listens on and a state naming a pid now reused.
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(sdir / "pilot.sock"))
        state = {"pid": bystander.pid, "pid_start": process_start_time(bystander.pid), "state": "active"}
        (sdir / "state.json").write_text(json.dumps(state))
        status = _cli(["status"], tmp_path)
        assert status.returncode == 1 and "no pilot service running" in status.stdout, status.stdout + status.stderr
        assert "removed what a dead pilot service left behind" in status.stdout
        assert not (sdir / "pilot.sock").exists() and not (sdir / "state.json").exists()
        (sdir / "state.json").write_text(json.dumps(state))
        down = _cli(["down"], tmp_path)
        assert down.returncode == 0 and "no pilot service running" in down.stdout
        assert bystander.poll() is None  # never signalled
    finally:
        bystander.kill()
        bystander.wait()


def test_socket_that_cannot_exist_fails_before_any_pilot(tmp_path: Path) -> None:
    home = tmp_path / ("x" * 120)  # a Unix socket path longer than 108 bytes
    up = _cli(["up", "--walltime", "5"], home)
    assert up.returncode == 1, up.stdout + up.stderr
    log = (home / "service" / "service.log").read_text()
    assert "cannot create the service socket" in log and "shorter path" in log
    assert "pilot submitted" not in log  # failed before the pilot: nothing to leak
    assert not (home / "service" / "state.json").exists()


def test_idle_clock_runs_only_without_clients(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--keep-warm's idle timeout: a connected client stops the clock; it restarts when the client leaves."""
    import time

    monkeypatch.setenv("DEEPRC_HOME", str(tmp_path))
    service = PilotService(PilotSpec(), idle_timeout=0.2)
    service._last_active -= 10
    assert service._idle_for() >= 10
    a, b = socket.socketpair()
    t = threading.Thread(target=service.handle, args=(b,), daemon=True)
    t.start()
    a.sendall(b'{"op": "status"}\n')
    assert json.loads(a.makefile("rb").readline())["ok"]
    assert service._idle_for() == 0.0  # a client is connected
    a.close()
    t.join(5)
    time.sleep(0.3)
    assert 0.2 < service._idle_for() < 5


def test_jobspec_round_trips_through_the_bootstrap_arguments() -> None:
    """The bootstrap's parser and the client's arguments come from the one declaration: nothing is lost."""
    from deeprc_launch.bootstrap import parse_args
    from deeprc_launch.jobspec import FIELDS, bootstrap_argv

    job = JobSpec(
        command=["python", "x.py", "--lr", "0.1"],
        run_dir="/tmp/rt",
        run_id="rt1",
        backend="gloo",
        framework="torch",
        gpus_per_rank=0.5,
        rendezvous_timeout=33.0,
        cwd="/tmp/work dir",
        env={"K": "v"},
        timeout=600.0,
    )
    args = bootstrap_argv(job)
    ns = parse_args(args[2:])
    travelling = [name for name, rule in FIELDS if rule.boot is not None]
    assert set(travelling) == {
        "gpus_per_rank",
        "backend",
        "framework",
        "run_id",
        "run_dir",
        "rendezvous_timeout",
        "cwd",
        "timeout",  # kept by the bootstrap, not by RP (whose timeout watcher spins a CPU)
    }
    for name in travelling:
        assert getattr(ns, name) == getattr(job, name), name
    assert ns.command == job.command and ns.env_file == "/tmp/rt/job-env.json" and "K=v" not in args


def test_every_job_option_comes_from_the_declaration() -> None:
    """deeprc-launch's parser has each declared option once, and a command line becomes the same JobSpec."""
    from deeprc_launch.cli import build_parser, parse, specs_from_args
    from deeprc_launch.jobspec import FIELDS

    dests = [a.dest for a in build_parser()._actions]
    for name, rule in FIELDS:
        assert dests.count(name) == (rule.cli is not None), name
    ns = parse(
        ["-n", "2", "--gpus-per-rank", "0.5", "--backend", "gloo", "--env", "A=b=c", "--timeout", "9"]
        + ["--log-dir", "/tmp/ld", "--chdir", "/tmp", "x.py", "--ranks", "7"]
    )
    job, _ = specs_from_args(ns)
    assert (job.ranks, job.gpus_per_rank, job.backend, job.framework) == (2, 0.5, "gloo", "auto")
    assert (job.env, job.timeout, job.run_dir, job.cwd) == ({"A": "b=c"}, 9.0, "/tmp/ld", "/tmp")
    assert job.command == [sys.executable, os.path.abspath("x.py"), "--ranks", "7"] and job.name == "x.py"


def test_submitted_backend_and_framework_are_checked_against_their_choices() -> None:
    good = {"command": ["python", "x.py"], "run_dir": "/tmp/x", "run_id": "r1"}
    with pytest.raises(BadRequest, match="'backend' must be one of auto, nccl, gloo, mpi"):
        job_from_request({**good, "backend": "ucc"})
    with pytest.raises(BadRequest, match="'framework' must be one of auto, torch, tf, none"):
        job_from_request({**good, "framework": 3})
