"""Write the fault table of docs/reliability.md from tests/faults/results/faults.json.

``python -m tests.faults.report`` after ``pytest tests/faults`` (the table sits between the
``faults-table`` markers; the rest of the page is prose).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DOC = HERE.parents[1] / "docs" / "reliability.md"
START, END = "<!-- faults-table: python -m tests.faults.report -->", "<!-- /faults-table -->"


def _g(x: float) -> str:
    return f"{x:.3g}"


def rows(d: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """One (fault, detection, lost, test) row per recorded case."""
    out = []
    if a := d.get("a_tcp_stranger"):
        ms = [v * 1000 for v in a["detection_s"].values()]
        out.append(
            (
                "(a) strangers on rank 0's TCP port during set-up: garbage, a pickle that creates a file (raw and in the "
                "old 8-byte framing), a forged greeting, a silent connection, an 8 EiB length header",
                f"dropped after {_g(min(ms))}–{_g(max(ms))} ms; the silent and huge ones never stall the job "
                "(closed when set-up ends, at most 10 s each)",
                f"nothing: {a['rejected']} connections rejected and logged, no file created, the job completed "
                f"({a['wall_s']} s)",
                "`tests/faults/test_tcp_stranger.py`",
            )
        )
    if b := d.get("b_service_fuzz"):
        out.append(
            (
                f"(b) {b['messages']} fuzzed messages to the pilot service's socket",
                f"every line answered with an error naming it ({b['error_replies']} replies in {b['fuzz_s']} s; "
                f"{b['messages'] - b['replies']} truncated ones just closed)",
                f"nothing: `status` then says {b['status_after']} and a 2-rank launch runs ({b['launch_after_s']} s)",
                "`tests/faults/test_service_fuzz.py`",
            )
        )
    for key, name in (("torchrun", "torchrun"), ("mpirun", "mpirun"), ("deeprc_launch", "deeprc-launch (service)")):
        if c := d.get(f"c_sigkill_{key}"):
            out.append(
                (
                    f"(c) SIGKILL of rank 1 of 2 mid-epoch (DDP/gloo over a Deep RC loader) under {name}",
                    f"every rank gone {_g(c['detection_s'])} s after the kill (bound {c['bound_s']:g} s); launcher "
                    f"exited after {_g(c['launcher_exit_s'])} s",
                    f"nothing; the report names the rank ({c['names_rank'].split(': ', 1)[1]})",
                    "`tests/faults/test_rank_kill.py`",
                )
            )
    if x := d.get("d_sigkill_pilot_agent"):
        out.append(
            (
                "(d) SIGKILL of the RP agent of the client's own local pilot while a 2-rank task runs",
                f"client exits {_g(x['detection_s'])} s after the kill with exit {x['client_exit_code']}, saying the "
                "pilot agent died (the ranks end with their launcher; RP gets 20 s to report it, then the client "
                "cancels and closes the session)",
                "nothing: no rank, agent component or bridge left running",
                "`tests/faults/test_pilot_faults.py`",
            )
        )
    for key, what, lost in (
        ("e_ctrl_c_deeprc_launch_pilot_start", "`deeprc-launch --no-service`", "no pilot process left"),
        ("e_ctrl_c_up_pilot_start", "`deeprc-launch up`", "no service, pilot, socket or state file left"),
    ):
        if e := d.get(key):
            out.append(
                (
                    f"(e) Ctrl-C of {what} while its pilot starts",
                    f"exit 130 after {_g(e['detection_s'])} s, the pilot released first",
                    f"nothing: {lost}",
                    "`tests/faults/test_pilot_faults.py`",
                )
            )
    if c := d.get("e_concurrent_ups"):
        out.append(
            (
                "(e) two `deeprc-launch up` at the same moment on one DEEPRC_HOME (the race that orphaned a pilot)",
                f"both returned 0 after {_g(c['detection_s'])} s with one service; the second `serve` saw the lock "
                "and started no pilot",
                f"nothing: {c['pilots_started']} pilot started, `down` left no process",
                "`tests/faults/test_pilot_faults.py`",
            )
        )
    for ad in ("torch", "tf"):
        if f := d.get(f"f_bad_inputs_{ad}"):
            slow = max(v.get("slowest_rank_s", 0) for v in f["cases"].values())
            out.append(
                (
                    f"(f) bad inputs through deeprc_{ad} on 2 ranks: nulls in a feature (one rank only), "
                    'string/bool/timestamp columns, a partition empty on one rank, batch_size 0/"8"/2.7, a window longer '
                    "than a partition",
                    f"a clear error on both ranks within {_g(slow * 1000)} ms (bound {f['bound_s']:g} s), naming the "
                    "column, parameter or rank",
                    "nothing; misaligned and memory-mapped buffers give the right values",
                    "`tests/faults/test_bad_inputs.py`",
                )
            )
    for op in ("join", "groupby"):
        if g := d.get(f"g_interrupted_{op}"):
            out.append(
                (
                    f"(g) a {op} interrupted by rank 1 dying inside its first exchange",
                    f"rank 0 raised `CommError` naming rank 1 {_g(g['detection_s'])} s after the death",
                    "nothing: both Parquet inputs byte-identical (sha256, mtime), no file written",
                    "`tests/faults/test_interrupted_ops.py`",
                )
            )
    out += _launch_hardening_rows(d)
    out += _core_hardening_rows(d)
    return out


def _core_hardening_rows(d: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Issue 28's core probes (tests/faults/test_core_hardening.py)."""
    out = []
    test = "`tests/faults/test_core_hardening.py`"
    if i := d.get("i_tcp_fd_exhaustion"):
        out.append(
            (
                f"(i) a stranger holds {i['connections_held']} silent connections to rank 0's TCP port while rank 0 "
                f"is limited to {i['descriptor_limit']} descriptors (`accept()` raised EMFILE and rank 0 died)",
                f"rank 0 ran out of descriptors {i['fd_exhausted']} times and kept serving: each time it drops the "
                "oldest unauthenticated connection (a rank greets within milliseconds), or backs off 50 ms when it "
                f"holds none; rank 1 authenticated {_g(i['rank1_joined_s'] * 1000)} ms after it began to connect, the job "
                f"completed {_g(i['job_completed_s'])} s after rank 1 was let go",
                f"nothing: {i['rejected']} stranger connections dropped and logged",
                test,
            )
        )
    if i := d.get("i_tcp_wildcard_master_addr"):
        out.append(
            (
                "(i) `MASTER_ADDR=0.0.0.0` for a 2-rank TCP job (rank 0 listened on every interface without a word)",
                f"both ranks refuse it within {_g(i['detection_s'] * 1000)} ms, naming the variable, the fix and the "
                "opt-in `DEEPRC_TCP_LISTEN_ALL=1` (which logs a warning); `::` too",
                "nothing: no rank listened or waited",
                test,
            )
        )
    if i := d.get("i_csv_quoted_newlines"):
        out.append(
            (
                f"(i) a CSV of {i['rows']:,} rows whose quoted values hold newlines (LF and CRLF), commas and escaped "
                "quotes, read on 3 ranks (it gave wrong rows or a parse error)",
                "not applicable: rows are split only at newlines outside quotes; each rank learns the quote state at "
                f"its range's start from one allgather. Rows per rank {i['rows_per_rank']}, equal to pyarrow in one "
                f"process ({_g(i['wall_s'])} s, start-up included); hypothesis property tests on 1–4 ranks "
                "(`tests/core/test_csv_properties.py`)",
                "nothing",
                test,
            )
        )
    for direction, how in (
        ("up", "rank 1 → rank 0: each is told `a frame on rank 1's connection failed its MAC check`"),
        (
            "down",
            "rank 0 → rank 1: rank 1 tells rank 0, which tells the rest, `rank 1: a frame from rank 0 failed "
            "its MAC check`",
        ),
    ):
        if i := d.get(f"i_forged_frame_{direction}"):
            out.append(
                (
                    f"(i) a frame with a wrong MAC on an established connection of a 3-rank job, {how.split(':')[0]} "
                    '(the others were told only "rank 1 failed or exited")',
                    f"every rank raised `CommError` within {_g(i['detection_s'] * 1000)} ms; {how.split(': ', 1)[1]}, "
                    "naming the collective",
                    "the job; nothing of the frame unpickled",
                    test,
                )
            )
    for dying in (1, 0):
        if i := d.get(f"i_uncaught_exception_rank{dying}"):
            out.append(
                (
                    f"(i) rank {dying} of 3 dies of an uncaught `ValueError` while the others wait in a collective "
                    f'(they were told only "rank {dying} failed or exited")',
                    f"the others raised `CommError` within {_g(i['detection_s'] * 1000)} ms: `rank {dying} died of "
                    "ValueError: shard ... (at .../bodies_core.py:LINE)` (the TCP communicator's excepthook tells "
                    + ("rank 0, which relays it)" if dying else "every rank)"),
                    "the job; every rank names the rank, the exception and where it was raised",
                    test,
                )
            )
    if i := d.get("i_corrupt_row_group"):
        out.append(
            (
                "(i) a Parquet file whose second row group has a corrupt page header, read on 2 ranks; rank 1 reads "
                'it (rank 0 was told only "rank 1 failed or exited during collective #2")',
                f"both ranks raised within {_g(i['detection_s'] * 1000)} ms of each other: rank 1 pyarrow's "
                "`OSError`, rank 0 `RankFailedError: read_parquet failed on rank(s) [1]: rank 1: OSError: "
                "read_parquet: .../corrupt.parquet row group 1: Couldn't deserialize thrift ...`",
                "the read; no rank waits",
                test,
            )
        )
    return out


def _launch_hardening_rows(d: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Issue 28's launcher probes (tests/faults/test_launch_hardening.py)."""
    out = []
    test = "`tests/faults/test_launch_hardening.py`"
    if h := d.get("h_service_hostile_lines"):
        out.append(
            (
                "(h) hostile lines to the pilot service: `[` x 100,000, `gpus_per_rank: Infinity`, `ranks:` 1 followed "
                "by 4,000 zeros, `timeout: 1e999`, `ranks: 10000000`",
                f"each line answered with an error naming it, in {_g(max(h['reply_s']) * 1000)} ms at most (nesting is "
                "counted before parsing and the count stops at depth 9; numbers are bounded while parsing)",
                "nothing: the next request (`status`) is answered",
                test,
            )
        )
    if h := d.get("h_planted_secret"):
        out.append(
            (
                "(h) a job secret planted in the run folder before rank 0 writes its own (0600, a known value); a "
                "group-writable, other-readable or foreign-owned secret read by rank 1; a planted `job-env.json`",
                f"the rank refuses the file, naming it (exit {h['exit_code']} after {_g(h['detection_s'])} s, the "
                "bootstrap's start included): rank 0 creates the secret exclusively, every reader applies the "
                "`tcp.key` owner and mode check",
                "nothing: the command never starts with a planted secret or environment",
                test,
            )
        )
        out.append(
            (
                "(h) `--env WANDB_API_KEY=...` on the bootstrap's command line (visible in `ps`); run folders 0755, "
                "rank logs 0644",
                "not applicable: `--env` values travel in `<log dir>/job-env.json` (0600, created exclusively, owner "
                "and mode checked), never in argv; run and rendezvous folders are 0700, rank logs, exit and address "
                "records 0600",
                "nothing visible to other users",
                test,
            )
        )
    return out


def table(d: dict[str, Any]) -> str:
    """The markdown table."""
    lines = ["| fault | detection (measured) | lost | test |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {t} |" for a, b, c, t in rows(d)]
    return "\n".join(lines)


def main() -> None:
    """Rewrite the table in docs/reliability.md."""
    d = json.loads((HERE / "results" / "faults.json").read_text())
    text = DOC.read_text()
    block = f"{START}\n{table(d)}\n{END}"
    new = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _m: block, text, flags=re.S)
    DOC.write_text(new)
    print(f"wrote {len(rows(d))} rows to {DOC}")


if __name__ == "__main__":
    main()
