"""The pilot service's wire protocol, checked: one JSON object per line, at most :data:`MAX_LINE` bytes.

Every malformed request (not UTF-8, not JSON, nested deeper than :data:`MAX_DEPTH`, a number
that is not finite or longer than :data:`MAX_INT_DIGITS` digits, not an object, an unknown op, a
missing or mistyped field, a count or time out of bounds: the checks declared with each job
field in :mod:`deeprc_launch.jobspec`) is a :class:`BadRequest` whose message names the
problem; the service answers it with ``{"ok": false, "error": ...}`` and keeps serving.
"""

from __future__ import annotations

import json
import math
import re
import socket
from typing import Any

from .jobspec import JobFieldError, JobSpec, job_from_wire

#: Longest request line the service reads (a JobSpec with a large environment fits easily).
MAX_LINE = 1 << 20

#: Deepest nesting of arrays/objects a request may have (a JobSpec needs 3); checked before parsing,
#: so a line of 100,000 ``[`` never reaches the recursive parser.
MAX_DEPTH = 8
#: Most digits an integer may have (``ranks`` of 1 followed by 4,000 zeros is refused, not parsed).
MAX_INT_DIGITS = 12
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


def job_from_request(job: Any) -> JobSpec:
    """A JobSpec from a submit request's ``job``, every field checked by its declaration (BadRequest names
    the first bad one)."""
    try:
        return job_from_wire(job)
    except JobFieldError as exc:
        raise BadRequest(f"submit: {exc}") from None
