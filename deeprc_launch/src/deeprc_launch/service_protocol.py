"""The pilot service's wire protocol, checked: one JSON object per line, at most :data:`MAX_LINE` bytes.

Every malformed request (not UTF-8, not JSON, nested deeper than :data:`MAX_DEPTH`, a number
that is not finite or longer than :data:`MAX_INT_DIGITS` digits, not an object, an unknown op, a
missing or mistyped field, a count or time out of bounds) is a :class:`BadRequest` whose message
names the problem; the service answers it with ``{"ok": false, "error": ...}`` and keeps serving.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import socket
from typing import Any

from .descriptions import JobSpec

#: Longest request line the service reads (a JobSpec with a large environment fits easily).
MAX_LINE = 1 << 20

#: Deepest nesting of arrays/objects a request may have (a JobSpec needs 3); checked before parsing,
#: so a line of 100,000 ``[`` never reaches the recursive parser.
MAX_DEPTH = 8
#: Most digits an integer may have (``ranks`` of 1 followed by 4,000 zeros is refused, not parsed).
MAX_INT_DIGITS = 12
#: Upper bounds of a job's counts and times: beyond them a request is a mistake or an attack.
MAX_RANKS = 1 << 20
MAX_GPUS_PER_RANK = 1024.0
MAX_SECONDS = 366 * 86400.0

#: Operations and the fields each needs besides ``op``.
OPS: dict[str, tuple[str, ...]] = {"status": (), "submit": ("job",), "state": ("uid",), "cancel": ("uid",), "down": ()}


class BadRequest(ValueError):
    """A request the service cannot act on; the message says why."""


class LineReader:
    """Reads request lines from a socket, never holding more than :data:`MAX_LINE` bytes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray()

    def readline(self) -> bytes | None:
        """The next line without its newline; None at end of stream; BadRequest if too long."""
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return line
            if len(self._buf) > MAX_LINE:
                self._buf.clear()
                raise BadRequest(f"request longer than {MAX_LINE} bytes without a newline")
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self._buf += chunk


def parse_request(line: bytes) -> dict[str, Any]:
    """One request line as a checked dict with a known ``op`` and its fields."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if too_deep(text):
        raise BadRequest(f"request is nested more than {MAX_DEPTH} levels deep")
    try:
        req = json.loads(text, parse_constant=_no_constant, parse_int=_bounded_int, parse_float=_finite_float)
    except BadRequest:
        raise
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"request is not JSON ({exc})") from None
    if not isinstance(req, dict):
        raise BadRequest(f"request must be a JSON object with an 'op', not {type(req).__name__}")
    op = req.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise BadRequest(f"unknown op {op!r}; one of {sorted(OPS)}")
    for name in OPS[op]:
        if name not in req:
            raise BadRequest(f"{op}: missing field {name!r}")
    if "uid" in OPS[op] and not isinstance(req["uid"], str):
        raise BadRequest(f"{op}: uid must be a string, not {type(req['uid']).__name__}")
    return req


def too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether a JSON text nests ``[``/``{`` deeper than ``limit`` (brackets inside strings do not count).

    Stops at the first bracket past the limit, so a megabyte of ``[`` costs microseconds.
    """
    depth = 0
    in_string = False
    # Only brackets, quotes and escape pairs matter; a regex finds them without a Python step per byte.
    for m in re.finditer(r'\\.|[\[\]{}"]', text, re.DOTALL):
        tok = m.group()
        if tok == '"':
            in_string = not in_string
        elif in_string or len(tok) > 1:
            continue  # a bracket inside a string, or an escape pair such as \" or \\
        elif tok in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _no_constant(name: str) -> Any:
    raise BadRequest(f"request holds {name}; numbers must be finite")


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise BadRequest(f"request holds an integer of {len(digits.lstrip('-'))} digits; at most {MAX_INT_DIGITS}")
    return int(digits)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest(f"request holds {text}, which is not a finite number")
    return value


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_RANKS


def _is_seconds(v: Any) -> bool:
    return _is_number(v) and 0 < v <= MAX_SECONDS


_CHECKS: dict[str, tuple[Any, str]] = {
    "command": (lambda v: _is_str_list(v) and len(v) > 0, "a non-empty list of strings"),
    "ranks": (_is_count, f"a positive integer up to {MAX_RANKS}"),
    "ranks_per_node": (lambda v: v is None or _is_count(v), f"a positive integer up to {MAX_RANKS} or null"),
    "cores_per_rank": (_is_count, f"a positive integer up to {MAX_RANKS}"),
    "gpus_per_rank": (
        lambda v: _is_number(v) and 0 <= v <= MAX_GPUS_PER_RANK,
        f"a number from 0 to {MAX_GPUS_PER_RANK:g}",
    ),
    "backend": (lambda v: isinstance(v, str), "a string"),
    "framework": (lambda v: isinstance(v, str), "a string"),
    "env": (
        lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()),
        "an object of strings",
    ),
    "timeout": (lambda v: v is None or _is_seconds(v), f"a positive number up to {MAX_SECONDS:g} or null"),
    "run_id": (lambda v: isinstance(v, str) and v != "" and "/" not in v, "a non-empty string without '/'"),
    "run_dir": (lambda v: isinstance(v, str) and v.startswith("/"), "an absolute path"),
    "python": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "name": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "rendezvous_timeout": (_is_seconds, f"a positive number up to {MAX_SECONDS:g}"),
    "cwd": (lambda v: isinstance(v, str) and v.startswith("/"), "an absolute path"),
}


def job_from_request(job: Any) -> JobSpec:
    """A JobSpec from a submit request's ``job``, every field checked (BadRequest names the first bad one)."""
    if not isinstance(job, dict):
        raise BadRequest(f"submit: job must be an object, not {type(job).__name__}")
    known = {f.name for f in dataclasses.fields(JobSpec)}
    unknown = sorted(set(job) - known)
    if unknown:
        raise BadRequest(f"submit: unknown job field(s) {unknown}")
    if "command" not in job:
        raise BadRequest("submit: job has no 'command'")
    for name, value in job.items():
        ok, what = _CHECKS[name]
        if not ok(value):
            raise BadRequest(f"submit: job field {name!r} must be {what}, got {json.dumps(value)[:80]}")
    return JobSpec(**job)
