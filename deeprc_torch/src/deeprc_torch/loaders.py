"""Batches of a GlobalTable as a standard, resumable ``torch.utils.data.DataLoader``.

:class:`BatchStream` is an IterableDataset whose items are whole batches made by
:class:`deeprc_core.TableBatches` (the agreed plan, shuffles and windows live there);
:class:`DeepRCDataLoader` iterates it with ``batch_size=None``. Its length is the
number of batches every rank runs per epoch, so Lightning's progress bar,
``limit_*_batches`` and DDP all see the same count on every rank.

Epochs and resuming. The loader knows its epoch (``set_epoch``, which Lightning calls
through the loader's ``sampler`` every epoch; without it a fully iterated epoch advances
the next one by itself) and how many batches of it it has handed out. ``state_dict()``
holds ``{epoch, batch, seed, ...}``; after ``load_state_dict()`` the next iteration
yields exactly the batches that were not yet handed out. Every other new iteration
starts its epoch from the first batch, as a DataLoader does. The count is taken where
batches leave the loader (after device prefetching), so prefetched batches are never
counted as seen.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from deeprc_core.adapter import EpochCursor, resolve_source, warn_plan
from deeprc_core.batch_settings import BatchOptions, BatchSettings
from torch.utils.data import DataLoader, IterableDataset, Sampler, get_worker_info

from deeprc_core import GlobalTable, TableBatches

from .staging import staged
from .tensors import ReadOnlyPolicy, TensorBatch, to_tensor, to_tensors

if TYPE_CHECKING:
    from typing_extensions import Unpack

Transform = Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor | None]]


def format_batch(tb: TensorBatch, return_index: bool, as_dict: bool) -> Any:
    """The user-facing batch: ``(x, y)``, ``(x, y, index)``, ``x``/``(x, index)`` without targets, or a dict."""
    if as_dict:
        out: dict[str, Any] = {"x": tb.x, "index": tb.index}
        if tb.y is not None:
            out["y"] = tb.y
        if tb.padded is not None:
            out["padded"] = tb.padded
        return out
    parts: list[torch.Tensor] = [tb.x] if tb.y is None else [tb.x, tb.y]
    if return_index:
        parts.append(tb.index)
    return parts[0] if len(parts) == 1 else tuple(parts)


class BatchStream(IterableDataset):
    """Whole tensor batches of one epoch of a TableBatches, from a start batch on."""

    def __init__(
        self,
        batches: TableBatches,
        *,
        return_index: bool = False,
        as_dict: bool = False,
        transform: Transform | None = None,
        readonly: ReadOnlyPolicy = "auto",
    ) -> None:
        self.batches = batches
        self.return_index = return_index
        self.as_dict = as_dict
        self.transform = transform
        self.readonly = readonly
        #: set by the loader before each iteration (workers see them when they start)
        self.epoch = 0
        self.start = 0

    def __len__(self) -> int:
        return self.batches.num_batches

    def __iter__(self) -> Iterator[Any]:
        worker = get_worker_info()
        plain = not (self.return_index or self.as_dict or self.transform)
        readonly = self.readonly
        for batch in self.batches.epoch(self.epoch, self.start):
            # With workers, batch b goes to worker (b - start) % W: the DataLoader reads workers round-robin,
            # so the order of batches is the plan's.
            if worker is not None and (batch.number - self.start) % worker.num_workers != worker.id:
                continue
            if plain:  # the common case, kept lean: a few microseconds per batch matter at 10k batches/s
                x = to_tensor(batch.x, readonly)
                yield x if batch.y is None else (x, to_tensor(batch.y, readonly))
                continue
            tb = to_tensors(batch, readonly)
            if self.transform is not None:
                x, y = self.transform(tb.x, tb.y)
                tb = TensorBatch(x, y, tb.index, tb.padded, tb.number, tb.epoch)
            yield format_batch(tb, self.return_index, self.as_dict)


class EpochSampler(Sampler[None]):
    """The loader's (index-free) sampler; carries ``set_epoch`` so Lightning's epoch reaches the loader."""

    def __init__(self, owner: DeepRCDataLoader) -> None:
        self._owner = owner

    def set_epoch(self, epoch: int) -> None:
        """Select ``epoch`` for the next iteration (a different epoch restarts at batch 0)."""
        self._owner.set_epoch(epoch)

    def __iter__(self) -> Iterator[None]:
        while True:  # an IterableDataset ignores indices; like torch's infinite constant sampler
            yield None


class DeepRCDataLoader(DataLoader):
    """A DataLoader over a :class:`BatchStream` that knows its epoch and position (``state_dict``)."""

    def __init__(
        self,
        stream: BatchStream,
        *,
        num_workers: int = 0,
        device: torch.device | str | None = None,
        pin_memory: bool = False,
        prefetch: int = 2,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("persistent_workers"):
            raise ValueError(
                "DeepRCDataLoader does not support persistent_workers (each epoch's plan is set per iteration)"
            )
        super().__init__(stream, batch_size=None, num_workers=num_workers, pin_memory=False, **kwargs)
        self.stream = stream
        self.device = None if device is None else torch.device(device)
        self.pin = bool(pin_memory)
        self.prefetch = int(prefetch)
        self.cursor = EpochCursor(stream.batches)
        self._sampler = EpochSampler(self)

    # DataLoader forbids assigning .sampler after __init__; Lightning reads it to call set_epoch.
    @property  # type: ignore[override]
    def sampler(self) -> Sampler[Any]:
        """The epoch-carrying sampler (see :class:`EpochSampler`)."""
        return self.__dict__.get("_sampler") or self.__dict__["_torch_sampler"]

    @sampler.setter
    def sampler(self, value: Sampler[Any]) -> None:
        self.__dict__["_torch_sampler"] = value

    @property
    def batches(self) -> TableBatches:
        """The core batch source."""
        return self.stream.batches

    @property
    def epoch(self) -> int:
        """The epoch the next (or current) iteration runs."""
        return self.cursor.epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (reshuffles with the same seed); a new epoch starts at its first batch."""
        self.cursor.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Epoch, batches handed out in it, seed and the plan's shape (to check a resume)."""
        return self.cursor.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration yields batches ``state['batch']`` onwards of ``state['epoch']``."""
        self.cursor.load_state_dict(state)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return self._iterate()

    def _iterate(self) -> Iterator[Any]:
        # The epoch's collective work (a global reshuffle) runs here, in the main process, never in a worker.
        start = self.cursor.begin()  # may move on to the next epoch: read the epoch after it
        self.stream.epoch, self.stream.start = self.cursor.epoch, start
        # Without workers a DataLoader with batch_size=None only passes the dataset's items through (with
        # ~100 us of bookkeeping per batch); iterate the stream directly then, so batches cost microseconds.
        it: Iterator[Any] = super().__iter__() if self.num_workers > 0 else iter(self.stream)
        if self.device is not None and self.device.type == "cuda":
            it = staged(it, self.device, self.prefetch, self.pin)
        for item in it:
            self.cursor.advance()
            yield item
        self.cursor.finish()


def loader(
    source: GlobalTable | str | os.PathLike[str] | Callable[[], GlobalTable],
    features: str | Sequence[str],
    target: str | Sequence[str] | None,
    batch_size: int,
    *,
    device: torch.device | str | None = None,
    pin_memory: bool | str = "auto",
    prefetch: int = 2,
    num_workers: int = 0,
    transform: Transform | None = None,
    return_index: bool = False,
    as_dict: bool = False,
    **options: Unpack[BatchOptions],
) -> DeepRCDataLoader:
    """This rank's batches of ``source`` for a plain PyTorch loop (collective: agrees the plan).

    The same batches as :class:`DeepRCDataModule`'s training loader; the batch settings
    (``shuffle``, ``seed``, ``even``, ``window``, ``drop_last``, ``dropna_target``, ``dtype``,
    ``readonly``) are the core's :class:`~deeprc_core.batch_settings.BatchSettings`, the same
    in every adapter. ``device`` (e.g. ``"cuda"``) makes batches arrive there through pinned
    staging ``prefetch`` batches ahead (``pin_memory="auto"``: with CUDA). Call
    ``set_epoch(e)`` each epoch, or just iterate again: a finished epoch advances to the next one.
    """
    settings = BatchSettings.from_options("deeprc_torch.loader", options)
    table = resolve_source(source, "deeprc_torch.loader")
    batches = TableBatches(table, features, target, batch_size, settings, what="deeprc_torch.loader")
    warn_plan(batches, "deeprc_torch.loader")
    dev = None if device is None else torch.device(device)
    if dev is not None and dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    cuda = dev is not None and dev.type == "cuda"
    pin = cuda if pin_memory == "auto" else bool(pin_memory) and cuda
    stream = BatchStream(
        batches, return_index=return_index, as_dict=as_dict, transform=transform, readonly=settings.readonly
    )
    return DeepRCDataLoader(stream, num_workers=num_workers, device=dev, pin_memory=pin, prefetch=prefetch)
