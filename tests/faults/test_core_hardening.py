"""Issue 28, the core's half (cases "i_*"): breaks an adversarial review found, each reproduced on real ranks.

* a stranger exhausts rank 0's file descriptors while the job sets up;
* a wildcard MASTER_ADDR, which made rank 0 listen on every interface without a word;
* a CSV whose quoted values hold newlines, read on 3 ranks;
* a forged frame on an established connection: every rank must be told it was a MAC failure, and where;
* a corrupt row group read by one rank: every rank must be told the rank, the file and the error.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tests.support.ranks import run_ranks

BODIES = Path(__file__).with_name("bodies_core.py")
TCP = {"DEEPRC_COMM": "tcp"}


def _run_in_thread(*args: Any, **kwargs: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def go() -> None:
        try:
            out["res"] = run_ranks(*args, **kwargs)
        except BaseException as exc:  # reported by the test, not lost in the thread
            out["exc"] = exc

    job = threading.Thread(target=go, daemon=True)
    job.start()
    return job, out


def _wait_for(path: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


@pytest.mark.mpi
def test_rank0_keeps_serving_when_descriptors_run_out(tmp_path: Path, record: Any) -> None:
    """Rank 0 limited to 64 descriptors; a stranger holds 200 silent connections; rank 1 must still join."""
    nofile, held = 64, 200
    job, out = _run_in_thread(BODIES, "fd_starved_job", 2, env=TCP, timeout=120, args=(str(tmp_path), str(nofile)))
    _wait_for(tmp_path / "port", 60)
    port = int((tmp_path / "port").read_text()) + 1  # the TCP communicator's port
    strangers: list[socket.socket] = []
    t0 = time.monotonic()
    while len(strangers) < held and time.monotonic() - t0 < 30:
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))  # silent: never sends a byte
        strangers.append(s)
        time.sleep(0.002)
    time.sleep(1.0)  # rank 0 has accepted all it can: today it died here with EMFILE
    go = time.monotonic()
    (tmp_path / "go").write_text("")
    job.join(150)
    done = time.monotonic() - go
    for s in strangers:
        s.close()
    assert not job.is_alive()
    if "exc" in out:
        raise out["exc"]
    res = [r.value for r in out["res"]]
    assert res[0]["allgather"] == res[1]["allgather"] == [0, 1]
    assert res[0]["fd_exhausted"] > 0, "the probe must be live: rank 0 did run out of descriptors"
    record(
        "i_tcp_fd_exhaustion",
        fault=f"a stranger holds {held} silent connections to rank 0's TCP port while rank 0 is limited to "
        f"{nofile} descriptors",
        descriptor_limit=nofile,
        connections_held=held,
        fd_exhausted=res[0]["fd_exhausted"],
        rejected=res[0]["rejected"],
        rank1_joined_s=round(res[1]["joined_s"], 3),
        job_completed_s=round(done, 3),
        lost="nothing",
    )


@pytest.mark.mpi
def test_a_wildcard_master_addr_fails_every_rank_at_once(record: Any) -> None:
    res = [r.value for r in run_ranks(BODIES, "wildcard_master_addr", 2, env=TCP, timeout=60, args=("0.0.0.0",))]
    for rank, r in enumerate(res):
        assert r["error"] is not None and r["error"].startswith(f"CommError: rank {rank}: MASTER_ADDR='0.0.0.0'")
        assert "every interface" in r["error"] and "DEEPRC_TCP_LISTEN_ALL=1" in r["error"]
    record(
        "i_tcp_wildcard_master_addr",
        fault="MASTER_ADDR=0.0.0.0 for a 2-rank TCP job (rank 0 used to listen on every interface without a word)",
        detection_s=round(max(r["seconds"] for r in res), 4),
        told={i: r["error"] for i, r in enumerate(res)},
        lost="nothing: no rank listened or waited; DEEPRC_TCP_LISTEN_ALL=1 is the explicit opt-in (warned)",
    )


def _quoted_newlines_csv(path: Path, rows: int) -> None:
    """The probe of issue 28: every text value quoted, with newlines (LF and CRLF), commas and escaped quotes."""
    rng = random.Random(29)
    lines = ["id,text,x"]
    for i in range(rows):
        text = "".join(rng.choice(["a", "b", "\n", "\n", "\r\n", ",", '""', "y"]) for _ in range(rng.randint(0, 12)))
        lines.append(f'{i},"{text}",{i * 0.5}')
    path.write_text("\r\n".join(lines) + "\r\n")


@pytest.mark.mpi
def test_csv_with_quoted_newlines_on_three_ranks(tmp_path: Path, record: Any) -> None:
    path = tmp_path / "quoted.csv"
    _quoted_newlines_csv(path, 20_000)
    ref = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(newlines_in_values=True))
    assert sum("\n" in v for v in ref.column("text").to_pylist()) > 1000, "the probe must hold quoted newlines"
    t0 = time.monotonic()
    res = [r.value for r in run_ranks(BODIES, "read_csv_rows", 3, env=TCP, timeout=120, args=(str(path),))]
    wall = time.monotonic() - t0
    got = [row for r in res for row in r["rows"]]
    assert [r["num_rows"] for r in res] == [ref.num_rows] * 3
    assert got == ref.to_pylist()
    assert all(r["rows"] for r in res), "every rank should get a share"
    record(
        "i_csv_quoted_newlines",
        fault="a CSV of 20,000 rows whose quoted values hold newlines, commas and escaped quotes, read on 3 ranks",
        rows=ref.num_rows,
        rows_per_rank=[len(r["rows"]) for r in res],
        equal_to_pyarrow=True,
        wall_s=round(wall, 2),
        lost="nothing",
    )


@pytest.mark.mpi
@pytest.mark.parametrize("direction", ["up", "down"])
def test_a_forged_frame_is_named_on_every_rank(direction: str, record: Any) -> None:
    res = [r.value for r in run_ranks(BODIES, "forged_frame", 3, env=TCP, timeout=90, args=(direction,))]
    errors = [r["error"] for r in res]
    assert all(e is not None for e in errors), errors
    for e in errors:
        assert "MAC" in e, errors
        assert "rank 1" in e, errors
    if direction == "up":  # rank 0 saw the forged frame on rank 1's connection
        assert all("rank 1's connection" in e for e in errors), errors
    else:  # rank 1 saw it on its connection from rank 0 and told rank 0, which told the rest
        assert all("from rank 0" in e for e in errors), errors
    t0 = min(r["t0"] for r in res)
    record(
        f"i_forged_frame_{direction}",
        fault="a frame with a wrong MAC on an established connection, "
        + ("rank 1 -> rank 0" if direction == "up" else "rank 0 -> rank 1")
        + ", 3 ranks",
        detection_s=round(max(r["t_end"] for r in res) - t0, 4),
        told={i: e for i, e in enumerate(errors)},
        lost="the job (every rank raised CommError); nothing unpickled from the forged frame",
    )


@pytest.mark.mpi
@pytest.mark.parametrize("dying", [1, 0])
def test_a_rank_that_dies_of_an_exception_is_named_with_it(dying: int, record: Any) -> None:
    res = run_ranks(BODIES, "uncaught_exception", 3, env=TCP, timeout=90, args=(str(dying),), expect_failure=True)
    assert res[dying].returncode == 1 and "ValueError: shard" in res[dying].stderr  # the traceback still printed
    told = {r.rank: r.value["error"] for r in res if r.rank != dying}
    for e in told.values():
        assert e is not None and f"rank {dying} died of ValueError: shard {dying} has 3 columns, expected 4" in e, told
        assert "bodies_core.py:" in e, told  # where it was raised
    record(
        f"i_uncaught_exception_rank{dying}",
        fault=f"rank {dying} of 3 dies of an uncaught ValueError while the others wait in a collective",
        detection_s=round(max(r.value["t_end"] - r.value["t0"] for r in res if r.rank != dying), 4),
        told={str(k): v for k, v in told.items()},
        lost="the job; every rank names the rank, the exception and where it was raised",
    )


def _corrupt_second_row_group(path: Path) -> None:
    table = pa.table({"id": pa.array(range(2000), pa.int64()), "v": pa.array([float(i) for i in range(2000)])})
    pq.write_table(table, path, row_group_size=1000)
    meta = pq.ParquetFile(path).metadata.row_group(1).column(0)
    offset = meta.dictionary_page_offset or meta.data_page_offset
    with open(path, "r+b") as fh:  # overwrite the page header of row group 1's first column
        fh.seek(offset)
        fh.write(b"\xff" * 24)


@pytest.mark.mpi
def test_a_corrupt_row_group_is_named_on_every_rank(tmp_path: Path, record: Any) -> None:
    path = tmp_path / "corrupt.parquet"
    _corrupt_second_row_group(path)
    with pytest.raises(OSError):
        pq.ParquetFile(path).read_row_group(1)  # the probe must be live
    res = [r.value for r in run_ranks(BODIES, "read_parquet_file", 2, env=TCP, timeout=90, args=(str(path),))]
    errors = [r["error"] for r in res]
    assert all(e is not None for e in errors), errors
    for e in errors:
        assert "corrupt.parquet" in e and "row group 1" in e, errors
    assert "rank(s) [1]" in errors[0] and "RankFailedError" in errors[0], errors[0]
    record(
        "i_corrupt_row_group",
        fault="a Parquet file whose second row group has a corrupt page header, read on 2 ranks (rank 1 reads it)",
        read_s=round(max(r["seconds"] for r in res), 4),
        detection_s=round(max(r["t_end"] for r in res) - min(r["t_end"] for r in res), 4),
        told={i: e for i, e in enumerate(errors)},
        lost="the read (both ranks raised, naming rank 1, the file, the row group and the error)",
    )
