"""Run an iterator a few items ahead in a helper thread (bounded, stoppable, errors passed on).

Used where the work per item runs without the GIL (the compiled stacking kernel), so
the helper's work overlaps the consumer's Python loop on another core.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_END = object()
#: Seconds between the helper's checks that the consumer is still there.
_POLL = 0.1


def prefetched(items: Iterable[T], depth: int, name: str = "deeprc prefetch") -> Iterator[T]:
    """The items of ``items``, produced up to ``depth`` ahead by a daemon thread (``depth`` 0: inline).

    The helper stops when the consumer closes this generator (or it is collected), and
    an exception raised while producing is raised here, in the consumer, with its traceback.
    """
    if depth <= 0:
        yield from items
        return
    q: queue.Queue[tuple[bool, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[bool, object]) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((True, _END))
        except BaseException as exc:  # handed to the consumer, which raises it
            put((False, exc))

    helper = threading.Thread(target=produce, name=name, daemon=True)
    helper.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                assert isinstance(item, BaseException)
                raise item
            if item is _END:
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        helper.join(timeout=10 * _POLL)
