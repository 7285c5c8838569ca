"""Where rows end in a byte range of a CSV file whose quoted values may hold newlines.

pyarrow's quoting rules (quote ``"``, doubled inside a quoted value to escape it, no escape
character): a quote opens a quoted value only at the start of a field; inside, a doubled
quote is a literal quote and a lone one closes the value; a quote in the middle of an
unquoted field is a plain character. A newline ends a row only outside quoted values.

Only maximal runs of quote bytes change the state "inside a quoted value?", and each run
acts on it as one of three functions:

* a run of even length: identity (``""`` is an empty value, or an escaped quote);
* a run of odd length at the start of a field (after a delimiter or a newline): toggle;
* a run of odd length elsewhere: outside afterwards (outside it is literal text, inside
  it closes the value).

So the state before every byte follows from prefix sums over the runs (vectorised with
NumPy), and a whole byte range acts as one of four functions (identity, toggle,
always-outside, always-inside), written ``(state after if outside before, state after if
inside before)``. Ranks exchange these in one allgather and compose them in file order:
each learns the exact state at the start of its range without reading anyone else's bytes.
"""

from __future__ import annotations

from typing import IO

import numpy as np

QUOTE, LF, CR = 0x22, 0x0A, 0x0D
#: A range's effect on "inside quotes?": (after, if outside before; after, if inside before).
Effect = tuple[int, int]
IDENTITY: Effect = (0, 1)
_FIRST_CHUNK, _MAX_CHUNK = 1 << 16, 1 << 22


def read_runs_whole(fh: IO[bytes], start: int, n: int) -> bytes:
    """``n`` bytes from ``start``, extended until they do not end inside a run of quotes (or at EOF)."""
    fh.seek(start)
    data = fh.read(n)
    while data and data[-1] == QUOTE:
        more = fh.read(4096)
        if not more:
            break
        data += more
    return data


def _runs(buf: np.ndarray, delimiter: int, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of quotes that start in ``buf[1:limit]`` (``buf[0]`` is the byte before the range,
    and a run that goes on from it is not ours): their starts, toggles and resets."""
    at = np.flatnonzero(buf == QUOTE)  # work on the quotes only: usually far fewer than bytes
    if not len(at):
        return at, np.zeros(0, bool), np.zeros(0, bool)
    gap = np.diff(at) != 1
    begins = at[np.concatenate(([True], gap))]
    ends = at[np.concatenate((gap, [True]))]
    keep = (begins >= 1) & (begins < limit)
    begins, ends = begins[keep], ends[keep]
    odd = (ends - begins) % 2 == 0  # length ends - begins + 1 is odd
    before = buf[begins - 1]
    at_field_start = (before == delimiter) | (before == LF) | (before == CR)
    return begins, odd & at_field_start, odd & ~at_field_start


def _states(toggle: np.ndarray, reset: np.ndarray, inside: int) -> np.ndarray:
    """Whether each run leaves the state inside quotes, starting from ``inside``."""
    n = len(toggle)
    flips = np.cumsum(toggle, dtype=np.int64)
    last_reset = np.maximum.accumulate(np.where(reset, np.arange(n), -1)) if n else np.empty(0, np.int64)
    since = flips - np.where(last_reset >= 0, flips[np.maximum(last_reset, 0)], 0)
    start = np.where(last_reset >= 0, 0, inside)
    return (start + since) % 2 == 1  # type: ignore[no-any-return]


def effect(buf: bytes, delimiter: str, limit: int) -> Effect:
    """The effect of the runs of quotes starting in ``buf[1:limit]`` (``buf[0]``: the byte before)."""
    if buf.find(b'"', 1, limit) < 0:
        return IDENTITY  # no quote starts here (the common case): skip the array work
    arr = np.frombuffer(buf, dtype=np.uint8)
    _, toggle, reset = _runs(arr, ord(delimiter), limit)
    resets = np.flatnonzero(reset)
    if len(resets):  # outside after the last reset whatever came before, then its toggles
        after = int(np.count_nonzero(toggle[resets[-1] + 1 :]) % 2)
        return after, after
    flips = int(np.count_nonzero(toggle) % 2)
    return flips, 1 - flips


def then(first: Effect, second: Effect) -> Effect:
    """The effect of ``first`` followed by ``second``."""
    return second[first[0]], second[first[1]]


def row_start(fh: IO[bytes], pos: int, floor: int, inside: int, delimiter: str) -> int:
    """First byte of the row that starts at or after ``pos`` (``floor``: the file's first data byte).

    ``inside`` is the state at ``pos`` (after every run of quotes that starts before it). A
    range boundary inside a row moves forward to the next newline outside quotes, so every
    row belongs to the range where it starts.
    """
    if pos <= floor:
        return floor
    offset = pos - 1  # the byte before pos: if it is a newline outside quotes, pos starts a row
    size = _FIRST_CHUNK
    while True:
        chunk = read_runs_whole(fh, offset, size)
        size = min(2 * size, _MAX_CHUNK)  # a long quoted value: read on in growing chunks
        if len(chunk) <= 1:
            return offset + len(chunk)
        arr = np.frombuffer(chunk, dtype=np.uint8)
        begins, toggle, reset = _runs(arr, ord(delimiter), len(arr))
        states = _states(toggle, reset, inside)
        newlines = np.flatnonzero(arr == LF)
        last = np.searchsorted(begins, newlines) - 1  # the last run before each newline
        quoted = np.where(last >= 0, states[np.maximum(last, 0)] if len(states) else False, bool(inside))
        free = newlines[~quoted]
        if len(free):
            return offset + int(free[0]) + 1
        inside = int(states[-1]) if len(states) else inside
        offset += len(chunk) - 1  # the next chunk starts with this one's last byte, as its "byte before"
