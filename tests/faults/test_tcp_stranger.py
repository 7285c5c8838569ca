"""(a) A stranger on a running job's TCP port: garbage, a pickle that would create a file, a huge length.

Two real ranks (torchrun-style env, the TCP communicator). Rank 0 waits for rank 1 while the
strangers connect; then rank 1 joins and the job must complete with no stranger's code run.
"""

from __future__ import annotations

import pickle
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from deeprc_core.comm import channel as ch

from tests.support.ranks import run_ranks
from tests.support.sockets import connect_when_listening

BODIES = Path(__file__).with_name("bodies.py")


def _touch_payload(path: Path) -> bytes:
    """A pickle whose unpickling creates ``path`` (the probe of issue 14)."""

    class Probe:
        def __reduce__(self) -> Any:
            return (Path.touch, (path,))

    return pickle.dumps(Probe())


def _attack(port: int, payload: bytes) -> float:
    """Send ``payload`` after the challenge; seconds until rank 0 dropped the connection."""
    with connect_when_listening(port, 30) as s:
        ch.recv_exact(s, ch.CHALLENGE_SIZE)
        t0 = time.monotonic()
        s.sendall(payload)
        s.settimeout(15)
        try:
            while s.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return time.monotonic() - t0


@pytest.mark.mpi
def test_stranger_on_the_tcp_port_runs_no_code(tmp_path: Path, record: Any) -> None:
    marker, control = tmp_path / "pwned", tmp_path / "control"
    payload = _touch_payload(marker)
    pickle.loads(_touch_payload(control))
    assert control.exists(), "the probe must be live: unpickling it does create a file"

    out: dict[str, Any] = {}
    job = threading.Thread(
        target=lambda: out.update(
            res=run_ranks(BODIES, "stranger_job", 2, env={"DEEPRC_COMM": "tcp"}, timeout=120, args=(str(tmp_path),))
        ),
        daemon=True,
    )
    t_start = time.monotonic()
    job.start()
    deadline = time.monotonic() + 60
    while not (tmp_path / "port").exists():
        assert time.monotonic() < deadline, "rank 0 never published its port"
        time.sleep(0.05)
    port = int((tmp_path / "port").read_text()) + 1  # the TCP communicator's port
    silent = connect_when_listening(port, 30)  # says nothing at all
    huge = connect_when_listening(port, 30)
    huge.sendall(struct.pack("!Q", 2**63))  # the old 8-byte header announcing 8 EiB
    drops = {
        "garbage": _attack(port, b"\x00garbage\xff" * 100),
        "pickle that creates a file (old framing)": _attack(port, struct.pack("!Q", len(payload)) + payload),
        "pickle that creates a file (raw)": _attack(port, payload),
        "right magic, forged MAC": _attack(port, ch.MAGIC + b"\x00" * (ch.HELLO_SIZE - len(ch.MAGIC))),
    }
    (tmp_path / "go").write_text("")
    job.join(150)
    silent.close()
    huge.close()
    assert not job.is_alive()
    res = [r.value for r in out["res"]]
    assert res[0]["allgather"] == res[1]["allgather"] == [0, 1]
    assert res[1]["alltoall"] == [b"\x00" * 1000, b"\x01" * 1000]
    assert not marker.exists(), "a stranger's pickle was unpickled on rank 0"
    assert res[0]["rejected"] == len(drops)
    assert max(drops.values()) < 5
    record(
        "a_tcp_stranger",
        fault="strangers on rank 0's TCP port while the job sets up: garbage, a pickle that creates a file "
        "(old framing and raw), a forged greeting, a silent connection and an 8 EiB length",
        detection_s={k: round(v, 4) for k, v in drops.items()},
        rejected=res[0]["rejected"],
        code_run=marker.exists(),
        job_completed=True,
        lost="nothing",
        wall_s=round(time.monotonic() - t_start, 2),
    )
