"""Issue 28, launcher side: hostile service requests, a planted job secret, secrets on argv, open run folders.

Each test ran against the code before the fix and failed there: the deep line got no reply,
Infinity and a 4,001-digit rank count were accepted, rank 0 adopted a planted secret and
rank 1 a group-writable one, ``--env`` values sat in the bootstrap's argv, and the run folder
and rank logs were 0755/0644. The bootstraps run as real processes (one rank each, ``RP_RANK``).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from deeprc_launch.descriptions import JobSpec, PilotSpec, task_description
from deeprc_launch.output import prepare_run_dir
from deeprc_launch.service import PilotService
from deeprc_launch.service_protocol import BadRequest, parse_request

from tests.launch.conftest import REPO

BOOTSTRAP_FAILED = 97
ENV_PROBE = "import os, sys; print(os.environ.get('DEEPRC_JOB_SECRET'), os.environ.get('PROBE_KEY'))"


def _replies(lines: list[bytes], seconds: list[float] | None = None) -> list[dict[str, Any]]:
    """Send lines to a real service handler over a socket pair; one reply per line, or the test fails."""
    service = PilotService(PilotSpec())
    a, b = socket.socketpair()
    t = threading.Thread(target=service.handle, args=(b,), daemon=True)
    t.start()
    replies = []
    with a, a.makefile("rb") as rf:
        a.settimeout(20)
        for line in lines:
            t0 = time.perf_counter()
            a.sendall(line + b"\n")
            raw = rf.readline()
            if seconds is not None:
                seconds.append(time.perf_counter() - t0)
            assert raw, f"no reply to {line[:60]!r}"
            replies.append(json.loads(raw))
    t.join(5)
    return replies


def test_hostile_requests_each_get_a_reply_naming_the_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record: Any
) -> None:
    monkeypatch.setenv("DEEPRC_HOME", str(tmp_path))
    job = '{"command": ["true"], "run_dir": "/tmp/x", "run_id": "r"'
    lines = [
        b"[" * 100_000,
        b"{" * 100_000,
        f'{{"op": "submit", "job": {job}, "gpus_per_rank": Infinity}}}}'.encode(),
        f'{{"op": "submit", "job": {job}, "ranks": 1{"0" * 4000}}}}}'.encode(),
        f'{{"op": "submit", "job": {job}, "timeout": 1e999}}}}'.encode(),
        f'{{"op": "submit", "job": {job}, "ranks": 10000000}}}}'.encode(),
        b'{"op": "status"}',
    ]
    seconds: list[float] = []
    replies = _replies(lines, seconds)
    assert [r["ok"] for r in replies] == [False] * 6 + [True]
    assert "nested more than 8 levels deep" in replies[0]["error"] and "nested" in replies[1]["error"]
    assert "Infinity" in replies[2]["error"] and "4001 digits" in replies[3]["error"]
    assert "1e999" in replies[4]["error"] and "'ranks' must be a positive integer up to" in replies[5]["error"]
    for line in lines[2:4]:  # refused by the parser itself, before any job is built
        with pytest.raises(BadRequest):
            parse_request(line)
    record("h_service_hostile_lines", reply_s=[round(x, 5) for x in seconds[:6]], replies=len(replies))
    # Strings may hold any brackets: only real nesting counts.
    assert parse_request(b'{"op": "state", "uid": "[[[[[[[[[[[[\\"{{{{{{{{{{"}')["uid"].startswith("[[[")


def _bootstrap(
    run_dir: Path, rank: int, world: int, extra: list[str], command: list[str]
) -> subprocess.CompletedProcess:
    env = {**os.environ, "RP_RANK": str(rank), "RP_RANKS": str(world)}
    cmd = [sys.executable, "-m", "deeprc_launch.bootstrap", "--run-dir", str(run_dir), "--run-id", "r1"]
    cmd += ["--host", "127.0.0.1", "--rendezvous-timeout", "20", *extra, "--", *command]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd=REPO)


def test_rank0_refuses_a_planted_secret(tmp_path: Path, record: Any) -> None:
    rdv = tmp_path / "rendezvous" / "r1"
    rdv.mkdir(parents=True)
    planted = rdv / "secret"
    planted.write_text("a" * 64)
    planted.chmod(0o600)
    t0 = time.monotonic()
    proc = _bootstrap(tmp_path, 0, 1, [], [sys.executable, "-c", ENV_PROBE])
    record("h_planted_secret", detection_s=round(time.monotonic() - t0, 3), exit_code=proc.returncode)
    assert proc.returncode == BOOTSTRAP_FAILED, proc.stderr
    err = (tmp_path / "rank-0.err").read_text()
    assert f"{planted} already exists" in err and "refusing" in err
    assert "a" * 64 not in (tmp_path / "rank-0.out").read_text()  # the command never ran with it


@pytest.mark.parametrize("plant", ["group-writable", "other-readable", "foreign-owned"])
def test_other_ranks_refuse_a_secret_that_is_not_private(tmp_path: Path, plant: str) -> None:
    rdv = tmp_path / "rendezvous" / "r1"
    rdv.mkdir(parents=True)
    (rdv / "rank-0.json").write_text(json.dumps({"host": "127.0.0.1", "port": 1, "cuda": None}))
    secret = rdv / "secret"
    secret.write_text("b" * 64)
    secret.chmod({"group-writable": 0o620, "other-readable": 0o604, "foreign-owned": 0o600}[plant])
    if plant == "foreign-owned":
        if os.getuid() != 0:
            pytest.skip("chown to another user needs root")
        os.chown(secret, 65534, 65534)
    proc = _bootstrap(tmp_path, 1, 2, [], [sys.executable, "-c", ENV_PROBE])
    assert proc.returncode == BOOTSTRAP_FAILED, proc.stderr
    err = (tmp_path / "rank-1.err").read_text()
    assert f"refusing {secret}" in err and "owned by you and readable by you alone" in err, err
    assert "b" * 64 not in (tmp_path / "rank-1.out").read_text()


def test_env_values_never_on_argv_and_run_files_private(tmp_path: Path) -> None:
    from deeprc_launch.runfiles import write_job_env

    run_dir = tmp_path / "run"
    job = JobSpec(command=[sys.executable, "-c", ENV_PROBE], env={"PROBE_KEY": "s3cret-value"}, run_dir=str(run_dir))
    prepare_run_dir(job.run_dir)
    write_job_env(job.run_dir, job.run_id, job.env)
    td = task_description(job, "deeprc.local")
    argv = [td["executable"], *td["arguments"]]
    assert not any("s3cret-value" in a for a in argv), argv  # `ps` would show it to every user
    assert "s3cret-value" not in json.dumps(td)
    env = {**os.environ, "RP_RANK": "0", "RP_RANKS": "1"}
    proc = subprocess.run(argv, env=env, cwd=REPO, timeout=60)  # the task's own command line
    assert proc.returncode == 0
    secret, value = (run_dir / "rank-0.out").read_text().split()
    assert value == "s3cret-value" and len(secret) == 64
    mode = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [run_dir, *run_dir.rglob("*")]}
    assert mode["run"] == 0o700 and mode["rendezvous"] == 0o700 and mode[job.run_id] == 0o700
    for name in ("rank-0.out", "rank-0.err", "rank-0.exit", "job-env.json", "secret", "rank-0.json"):
        assert mode[name] == 0o600, (name, oct(mode[name]))


def test_a_planted_env_file_is_refused(tmp_path: Path) -> None:
    env_file = tmp_path / "job-env.json"
    env_file.write_text(json.dumps({"run_id": "r1" * 20, "env": {"PROBE_KEY": "planted"}}))
    env_file.chmod(0o666)
    proc = _bootstrap(tmp_path, 0, 1, ["--env-file", str(env_file)], [sys.executable, "-c", ENV_PROBE])
    assert proc.returncode == BOOTSTRAP_FAILED
    assert f"refusing {env_file}" in (tmp_path / "rank-0.err").read_text()
