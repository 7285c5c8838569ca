"""Communicators: collectives, timeouts, failing ranks, agree(), selection and the adapter hook."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import deeprc_core.comm as comm_mod
import pytest
from deeprc_core.comm.base import Communicator, default_timeout

from deeprc_core import (
    CommError,
    CommTimeoutError,
    LocalCommunicator,
    RankFailedError,
    TCPCommunicator,
    Wiring,
    agree,
    get_communicator,
    register_communicator,
    set_default_communicator,
)
from tests.core.conftest import launch_env, launcher_params
from tests.support.ranks import free_port, run_ranks

BODIES = Path(__file__).with_name("ranks_comm.py")


# ------------------------------------------------------------------ local
def test_local_communicator_collectives() -> None:
    c = LocalCommunicator()
    assert (c.rank, c.size, c.kind) == (0, 1, "local")
    c.barrier()
    assert c.allgather({"a": 1}) == [{"a": 1}]
    assert c.bcast(5) == 5
    assert c.allreduce_int([1, 2], "max") == [1, 2]
    assert c.alltoall_bytes([b"xy"]) == [b"xy"]
    with pytest.raises(ValueError, match="one buffer per rank"):
        c.alltoall_bytes([b"", b""])
    assert isinstance(c, Communicator)


def test_agree_on_one_process() -> None:
    c = LocalCommunicator()
    agree(c, None, "nothing")
    with pytest.raises(KeyError, match="gone"):
        agree(c, KeyError("gone"), "lookup")


def test_default_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPRC_COMM_TIMEOUT", raising=False)
    assert default_timeout() == 300.0
    monkeypatch.setenv("DEEPRC_COMM_TIMEOUT", "2.5")
    assert default_timeout() == 2.5 and LocalCommunicator().timeout == 2.5
    for bad in ("soon", "0", "-3"):
        monkeypatch.setenv("DEEPRC_COMM_TIMEOUT", bad)
        with pytest.raises(ValueError, match="DEEPRC_COMM_TIMEOUT"):
            default_timeout()


# ------------------------------------------------------- selection, hook
@pytest.fixture
def fresh_default(monkeypatch: pytest.MonkeyPatch) -> Any:
    set_default_communicator(None)
    saved = dict(comm_mod._providers)
    monkeypatch.delenv("DEEPRC_COMM", raising=False)
    yield
    set_default_communicator(None)
    comm_mod._providers.clear()
    comm_mod._providers.update(saved)


def test_single_process_gets_local(fresh_default: Any) -> None:
    c = get_communicator(Wiring(0, 1))
    assert c.kind == "local" and get_communicator() is c


def test_registered_provider_wins_by_priority(fresh_default: Any) -> None:
    class Fake(LocalCommunicator):
        kind = "fake"

        def __init__(self, rank: int, size: int) -> None:
            super().__init__(timeout=1)
            self._r, self._s = rank, size

        @property
        def rank(self) -> int:
            return self._r

        @property
        def size(self) -> int:
            return self._s

    register_communicator(
        "unavailable", lambda w: pytest.fail("must not be built"), available=lambda: False, priority=0
    )
    register_communicator("fake", lambda w: Fake(w.rank, w.world_size), priority=10)
    c = get_communicator(Wiring(1, 2))
    assert c.kind == "fake" and c.rank == 1


def test_provider_with_wrong_rank_is_refused(fresh_default: Any) -> None:
    register_communicator("liar", lambda w: LocalCommunicator())
    with pytest.raises(ValueError, match="rank 0 of 1.*rank 1 of 2"):
        get_communicator(Wiring(1, 2))


def test_deeprc_comm_names_the_communicator(fresh_default: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPRC_COMM", "carrier-pigeon")
    with pytest.raises(ValueError, match="carrier-pigeon.*local.*mpi.*tcp"):
        get_communicator(Wiring(0, 2))
    monkeypatch.setenv("DEEPRC_COMM", "local")
    with pytest.raises(ValueError, match="2 ranks"):
        get_communicator(Wiring(0, 2))
    monkeypatch.setenv("DEEPRC_COMM", "tcp")
    with pytest.raises(ValueError, match="MASTER_ADDR and MASTER_PORT"):
        get_communicator(Wiring(0, 2, master_addr="127.0.0.1"))


# --------------------------------------------- TCP in threads (no launch)
def _tcp_threads(size: int, body: Callable[[TCPCommunicator], Any], timeout: float = 2.0) -> list[Any]:
    """Run ``body`` on ``size`` TCP communicators in threads; each result or exception, by rank."""
    port = free_port()
    results: list[Any] = [None] * size

    def run(rank: int) -> None:
        comm = None
        try:
            comm = TCPCommunicator(rank, size, "127.0.0.1", port, timeout=timeout)
            results[rank] = body(comm)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            results[rank] = exc
        finally:
            if comm is not None and not getattr(comm, "keep_open", False):
                comm.close()

    threads = [threading.Thread(target=run, args=(r,), daemon=True) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a TCP rank hung"
    return results


def test_tcp_collectives_in_threads() -> None:
    def body(c: TCPCommunicator) -> Any:
        c.barrier()
        bufs = [bytes([c.rank]) * (d + 1) for d in range(c.size)]
        return c.allgather(c.rank), c.allreduce_int([c.rank, 1], "sum"), [bytes(b) for b in c.alltoall_bytes(bufs)]

    res = _tcp_threads(3, body)
    for r, (gathered, summed, received) in enumerate(res):
        assert gathered == [0, 1, 2] and summed == [3, 3]
        assert received == [bytes([src]) * (r + 1) for src in range(3)]


def test_tcp_rank_that_never_enters_times_out_everywhere() -> None:
    def body(c: TCPCommunicator) -> Any:
        if c.rank == 2:
            time.sleep(4)
            return "stuck"
        t0 = time.monotonic()
        try:
            c.allgather(c.rank)
        except CommTimeoutError as exc:
            return exc, time.monotonic() - t0
        return None

    res = _tcp_threads(3, body, timeout=1.0)
    for r in (0, 1):
        exc, elapsed = res[r]
        assert isinstance(exc, CommTimeoutError), res
        assert elapsed < 1.0 + 2.5, elapsed
    assert "rank(s) [2]" in str(res[0][0]) and "rank(s) [2]" in str(res[1][0])


def test_tcp_rank_that_leaves_fails_the_others_at_once() -> None:
    def body(c: TCPCommunicator) -> Any:
        c.barrier()
        if c.rank == 1:
            c.close()  # what a crashing process does to its socket
            return "left"
        t0 = time.monotonic()
        try:
            c.allgather(c.rank)
        except CommError as exc:
            return exc, time.monotonic() - t0
        return None

    res = _tcp_threads(3, body, timeout=20.0)
    for r in (0, 2):
        exc, elapsed = res[r]
        assert isinstance(exc, CommError) and not isinstance(exc, CommTimeoutError), res
        assert "rank 1" in str(exc) and elapsed < 5, (exc, elapsed)


def test_tcp_broken_communicator_stays_broken() -> None:
    def body(c: TCPCommunicator) -> Any:
        if c.rank == 1:
            c.close()
            return "left"
        with pytest.raises(CommError):
            c.allgather(0)
        with pytest.raises(CommError, match="earlier failure"):
            c.barrier()
        return "ok"

    assert _tcp_threads(2, body, timeout=5.0)[0] == "ok"


def test_tcp_rank0_unreachable_times_out() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(CommTimeoutError, match="could not reach rank 0"):
        TCPCommunicator(1, 2, "127.0.0.1", port, timeout=0.5)
    assert time.monotonic() - t0 < 3


# ----------------------------------------------------- real processes
@pytest.mark.parametrize(("launcher", "n"), launcher_params([("mpirun", 2), ("mpirun", 3), ("env", 3)]))
def test_collectives_on_real_ranks(launcher: str, n: int) -> None:
    res = [
        r.value for r in run_ranks(BODIES, "collectives", n, launcher=launcher, env=launch_env(launcher), timeout=90)
    ]
    for r, v in enumerate(res):
        assert v["kind"] == ("mpi" if launcher == "mpirun" else "tcp")
        assert v["wiring"] == ("openmpi" if launcher == "mpirun" else "torchrun")
        assert (v["rank"], v["size"]) == (r, n)
        assert v["allgather"] == [{"r": i, "sq": i * i} for i in range(n)]
        assert v["bcast"] == f"from {n - 1}"
        assert v["sum"] == [sum(range(n)), n, 10 * n] and v["min"] == [5] and v["max"] == [n + 4]
        expect = [(0, b"") if r == 0 else (r + 1, bytes([src])) for src in range(n)]
        if r == n - 1:
            expect[0] = (3 << 20, b"\x00")
        assert v["alltoall"] == expect
        if r == 1:
            assert v["agree"] == ("ValueError", "column 'x' missing on this rank")
        else:
            kind, msg, failed = v["agree"]
            assert kind == "RankFailedError" and "rank(s) [1]" in msg and "column 'x' missing" in msg
            assert failed == {1: "ValueError: column 'x' missing on this rank"}


@pytest.mark.mpi
def test_tcp_stuck_rank_on_real_processes() -> None:
    t0 = time.monotonic()
    env = launch_env("env", DEEPRC_COMM_TIMEOUT="2", STUCK_SECONDS="6")
    res = [r.value for r in run_ranks(BODIES, "stuck_rank", 3, launcher="env", env=env, timeout=60)]
    assert res[1] == {"stuck": True}
    for r in (0, 2):
        assert res[r]["timeout_error"] and res[r]["elapsed"] < 2 + 3, res[r]
        assert "rank(s) [1]" in res[r]["message"]
    assert time.monotonic() - t0 < 30


@pytest.mark.mpi
@pytest.mark.parametrize(("launcher", "n"), launcher_params([("mpirun", 2), ("mpirun", 3)]))
def test_mpi_stuck_rank_times_out_and_ends_the_job(launcher: str, n: int) -> None:
    t0 = time.monotonic()
    env = {"DEEPRC_COMM_TIMEOUT": "2", "STUCK_SECONDS": "120", "RERAISE": "1"}
    res = run_ranks(
        BODIES, "stuck_rank", n, launcher=launcher, env=env, timeout=60, args=(str(n - 1),), expect_failure=True
    )
    assert time.monotonic() - t0 < 40, "the stuck rank was not ended with the job"
    for r in range(n - 1):
        assert "CommTimeoutError" in res[r].stderr and "within 2s" in res[r].stderr, res[r].stderr


@pytest.mark.mpi
def test_tcp_failing_rank_fails_the_others() -> None:
    res = run_ranks(
        BODIES,
        "failing_rank",
        3,
        launcher="env",
        env=launch_env("env", DEEPRC_COMM_TIMEOUT="30"),
        timeout=60,
        expect_failure=True,
    )
    assert res[1].returncode == 1 and "rank 1 broke" in res[1].stderr
    for r in (0, 2):
        v = res[r].value
        assert v is not None and v["error"] == "CommError" and v["elapsed"] < 10, (v, res[r].stderr)


@pytest.mark.mpi
@pytest.mark.parametrize(("launcher", "n"), launcher_params([("mpirun", 3)]))
def test_mpi_failing_rank_aborts_the_job(launcher: str, n: int) -> None:
    t0 = time.monotonic()
    res = run_ranks(BODIES, "uncaught_on_one_rank", n, launcher=launcher, timeout=90, expect_failure=True)
    assert time.monotonic() - t0 < 45, "MPI_Abort did not end the other ranks"
    assert "[deeprc rank 1] uncaught exception, aborting the MPI job" in res[1].stderr
    assert "boom on rank 1" in res[1].stderr
    assert all(r.value is None for r in res)


@pytest.mark.mpi
@pytest.mark.parametrize(("launcher", "n"), launcher_params([("mpirun", 2)]))
def test_mpi_rank_that_raises_fails_the_job(launcher: str, n: int) -> None:
    t0 = time.monotonic()
    res = run_ranks(
        BODIES,
        "failing_rank",
        n,
        launcher=launcher,
        env={"DEEPRC_COMM_TIMEOUT": "120"},
        timeout=90,
        expect_failure=True,
    )
    assert time.monotonic() - t0 < 45
    assert "rank 1 broke" in res[1].stderr


def test_rank_failed_error_carries_the_ranks() -> None:
    exc = RankFailedError("x failed", {2: "boom"})
    assert exc.failed_ranks == {2: "boom"} and isinstance(exc, CommError)
