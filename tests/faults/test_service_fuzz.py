"""(b) 500 fuzzed messages to the pilot service's socket: it answers each, then still runs status and a launch."""

from __future__ import annotations

import json
import random
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.launch.conftest import SCRIPTS, run_cli

pytestmark = [pytest.mark.launcher, pytest.mark.slow]

N_MESSAGES = 500


def _fuzz(rng: random.Random) -> tuple[bytes, bool]:
    """One hostile message and whether it ends in a newline (so a reply is due)."""
    kind = rng.randrange(7)
    if kind == 0:  # random bytes
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))).replace(b"\n", b"") + b"\n", True
    if kind == 1:  # JSON that is not a request object
        value = rng.choice([[], [1, 2], "down", 3, None, True, {"op": None}, {"op": ["status"]}, {}])
        return json.dumps(value).encode() + b"\n", True
    if kind == 2:  # unknown or half-formed ops (never a real `down`)
        value = rng.choice([{"op": "launch"}, {"op": "submit"}, {"op": "state"}, {"op": "cancel", "uid": 7}])
        return json.dumps(value).encode() + b"\n", True
    if kind == 3:  # unknown task uids
        return json.dumps(
            {"op": rng.choice(["state", "cancel"]), "uid": f"task.{rng.randrange(10**6):06d}"}
        ).encode() + b"\n", True
    if kind == 4:  # submit with one bad field
        job: dict[str, Any] = {"command": ["true"], "run_dir": "/tmp/x", "run_id": "fuzz"}
        field, bad = rng.choice(
            [
                ("ranks", "2"),
                ("ranks", -1),
                ("command", []),
                ("env", {"A": 1}),
                ("run_dir", "rel"),
                ("nope", 1),
                ("timeout", "soon"),
            ]
        )
        job[field] = bad
        return json.dumps({"op": "submit", "job": job}).encode() + b"\n", True
    if kind == 5:  # invalid UTF-8 and a truncated line: no newline, the client just leaves
        return b'{"op": "sta\xff\xfe', False
    return b"{" * rng.randrange(1, 5000) + b"\n", True  # deep or unbalanced nesting


def test_service_survives_fuzz_and_still_launches(pilot_service: Path, tmp_path: Path, record: Any) -> None:
    sock_path = pilot_service / "service" / "pilot.sock"
    rng = random.Random(500)
    replies = errors = 0
    t0 = time.monotonic()
    for _ in range(N_MESSAGES):
        msg, expect_reply = _fuzz(rng)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(str(sock_path))
            s.sendall(msg)
            if not expect_reply:
                continue
            line = s.makefile("rb").readline()
            assert line, f"no reply to {msg[:80]!r}"
            reply = json.loads(line)
            replies += 1
            assert reply["ok"] is False and reply["error"], (msg[:80], reply)
            errors += 1
    fuzz_s = time.monotonic() - t0
    status = run_cli(["status"])
    assert status.returncode == 0 and "PMGR_ACTIVE" in status.stdout, status.stdout + status.stderr
    t1 = time.monotonic()
    launch = run_cli(["--ranks", "2", "--log-dir", str(tmp_path), str(SCRIPTS / "print_wiring.py")])
    launch_s = time.monotonic() - t1
    assert launch.returncode == 0, launch.stderr[-3000:]
    assert "submitting to the running pilot service" in launch.stderr
    record(
        "b_service_fuzz",
        fault=f"{N_MESSAGES} fuzzed messages to the pilot service's Unix socket (random bytes, non-objects, "
        "unknown ops and uids, bad JobSpec fields, invalid UTF-8, unbalanced nesting)",
        messages=N_MESSAGES,
        replies=replies,
        error_replies=errors,
        fuzz_s=round(fuzz_s, 2),
        status_after="PMGR_ACTIVE",
        launch_after_s=round(launch_s, 2),
        lost="nothing (the service and its pilot stayed up)",
    )
