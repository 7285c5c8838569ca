"""Host-to-device staging: pinned buffers and non-blocking copies on a side stream, ahead of compute.

A background thread takes batches from the loader, copies each tensor into pinned
memory (torch's caching host allocator recycles the buffers once their copy finished),
starts a non-blocking copy to the device on its own CUDA stream and records an event.
The consumer makes its current stream wait on that event, so up to ``depth`` batches
move while the model computes on the previous one. Each pinned copy is counted
(reason ``pin``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import torch

from deeprc_core import record_copy

_END = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            yield from _tensors(v)


def move(obj: Any, device: torch.device, pin: bool) -> Any:
    """``obj`` (tensor, tuple, list, dict) with every tensor on ``device``, through pinned memory when ``pin``."""
    if isinstance(obj, torch.Tensor):
        if obj.device == device:
            return obj
        if pin and obj.device.type == "cpu" and not obj.is_pinned():
            obj = obj.pin_memory()
            record_copy("pin", obj.numel() * obj.element_size(), "batch")
        return obj.to(device, non_blocking=pin)
    if isinstance(obj, dict):
        return {k: move(v, device, pin) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(move(v, device, pin) for v in obj)
    if isinstance(obj, list):
        return [move(v, device, pin) for v in obj]
    return obj


def staged(batches: Iterator[Any], device: torch.device, depth: int = 2, pin: bool = True) -> Iterator[Any]:
    """Yield ``batches`` already on CUDA ``device``, copied ``depth`` batches ahead on a side stream."""
    stream = torch.cuda.Stream(device)
    slots: queue.Queue[Any] = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()

    def put(item: Any) -> None:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def produce() -> None:
        try:
            with torch.cuda.device(device), torch.cuda.stream(stream):
                for batch in batches:
                    if stop.is_set():
                        return
                    moved = move(batch, device, pin)
                    done = torch.cuda.Event()
                    done.record(stream)
                    put((moved, done))
            put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            put(_Failure(exc))

    worker = threading.Thread(target=produce, name="deeprc-h2d", daemon=True)
    worker.start()
    try:
        current = torch.cuda.current_stream(device)
        while True:
            item = slots.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            moved, done = item
            current.wait_event(done)
            for t in _tensors(moved):
                t.record_stream(current)  # the side stream's allocation is now also used by compute
            yield moved
    finally:
        stop.set()
        while worker.is_alive():
            try:
                slots.get_nowait()
            except queue.Empty:
                worker.join(0.05)
