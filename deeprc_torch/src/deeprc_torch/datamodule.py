"""The DataModule logic, shared by the ``lightning`` and ``pytorch_lightning`` flavours.

:class:`DataModuleLogic` is a mixin; :mod:`deeprc_torch.lit` and :mod:`deeprc_torch.pl`
combine it with each package's ``LightningDataModule``. It resolves sources in
``setup()`` (on every rank, after Lightning initialised the process group, so tables use
the torch communicator), builds one :class:`deeprc_core.TableBatches` per split and
hands out :class:`~deeprc_torch.loader.DeepRCDataLoader` objects.

Sharding: each loader yields only this rank's batches of an agreed plan, so every
rank runs the same number of batches. The loaders are iterable, so Lightning never
adds a DistributedSampler: ``use_distributed_sampler`` may stay at its default.

Ranks come from the Trainer: in ``setup()`` the DataModule takes the Trainer's rank and
world size (any strategy: DeepRCStrategy, Lightning's ``ddp`` with its own launcher,
``ddp_spawn``) and cross-checks the launcher's variables (torchrun, mpirun, srun,
deeprc-launch). A launcher that started N ranks under a Trainer that runs another number
(e.g. the default single-device strategy under torchrun) fails on every rank before the
first step, naming the strategy to use.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from deeprc_core.adapter import Source, check_resumable, resolve_source, warn_plan
from deeprc_core.batch_settings import BatchOptions, BatchSettings, with_batch_options
from deeprc_core.plan import positive_int
from deeprc_core.prediction import prediction_batches

from deeprc_core import DeepRCError, GlobalTable, TableBatches, WiringError, detect_wiring

from .comm import process_group_communicator
from .loaders import BatchStream, DeepRCDataLoader, Transform

if TYPE_CHECKING:
    from typing_extensions import Unpack

# Lightning warns about any IterableDataset with __len__; ours is exact on every rank and with workers.
warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")

Split = Literal["train", "val", "test", "predict"]
SPLITS: tuple[Split, ...] = ("train", "val", "test", "predict")
_STAGE_SPLITS: dict[str | None, tuple[Split, ...]] = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("predict",),
    None: SPLITS,
}


def _split_table(table: GlobalTable, fractions: Sequence[float], random: bool, seed: int) -> list[GlobalTable]:
    """Parts of ``table`` by global row order (or a seeded random assignment), one per fraction."""
    if not 2 <= len(fractions) <= 3:
        raise ValueError(f"split={list(fractions)}: give 2 (train, val) or 3 (train, val, test) fractions")
    return table.split(list(fractions), ordered=not random, seed=seed)


class DataModuleLogic:
    """Everything DeepRCDataModule does (a mixin before ``LightningDataModule``).

    Parameters:
        source, val, test, predict: a :class:`deeprc_core.GlobalTable`, a path (Parquet file or
            folder, CSV, Arrow IPC) or a function returning a GlobalTable, called in ``setup()`` on
            every rank (preprocessing runs inside the job, per rank).
        features, target: column name(s); several columns are packed once (one counted copy),
            one ``fixed_size_list`` column is used as is. ``target=None``: batches are ``x`` only.
        batch_size: samples per batch on each rank (``eval_batch_size`` for val/test/predict).
        split: ``(train, val[, test])`` fractions of ``source`` by global row order, or at random
            with ``seed`` when ``split_random``.
        shuffle: ``True`` (each rank permutes its own samples per epoch), ``"global"`` (rows move
            across ranks every epoch) or ``False``; val/test/predict are never shuffled.
        seed: shuffles and random splits depend only on it and the epoch.
        even: ``"auto"`` (default), ``"drop"``, ``"pad"`` or ``"rebalance"``: how uneven partitions
            still give every rank the same number of batches (see :mod:`deeprc_core.plan`); ``"auto"``
            moves rows (in order) when dropping would skip more than a sample per rank, e.g. for the
            parts of ``split=``. The predict split always pads (every row predicted once;
            :class:`GatherPredictions` removes the repeats).
        window: ``(input_len, horizon[, stride])`` or a :class:`deeprc_core.Window`: batches are
            ``(B, input_len, F)`` -> ``(B, horizon, T)`` strided views.
        eval_window: the window of val/test/predict (default: ``window``), e.g. the same window
            with stride 1 to score every window while training on every k-th.
        pin_memory, prefetch: on a CUDA device (``"auto"``), batches go through pinned memory and
            non-blocking copies on a side stream, ``prefetch`` batches ahead of compute.
        num_workers: DataLoader worker processes (batches then cross process boundaries: copies).
        transform: ``f(x, y) -> (x, y)`` applied to each batch's tensors.
        return_index: batches are ``(x, y, index)`` with the samples' global row ids;
            ``as_dict``: ``{"x", "y", "index"[, "padded"]}`` instead.
        dtype: of x and y (float32 by default).
        readonly: ``"auto"`` (default: copy batches of unwritable memory such as memory-mapped files, counted;
            share read-only window views), ``"share"``, ``"copy"`` or ``"error"`` (see :mod:`deeprc_torch.tensors`).

    ``shuffle``, ``seed``, ``even``, ``window``, ``eval_window``, ``drop_last``, ``dropna_target``,
    ``dtype`` and ``readonly`` are the core's batch settings
    (:class:`deeprc_core.batch_settings.BatchSettings`, kept in :attr:`settings`): the same keywords,
    types and checks in every adapter.

    Shapes (B batch, F features, T targets): ``x`` is ``(B, F)`` (``(B,)`` for one scalar column),
    ``y`` ``(B, T)`` (``(B,)`` for one target column); with ``window``, ``(B, input_len, F)`` and
    ``(B, horizon, T)``.
    """

    trainer: Any

    @with_batch_options
    def __init__(
        self,
        source: Source | None,
        features: str | Sequence[str],
        target: str | Sequence[str] | None,
        batch_size: int,
        *,
        val: Source | None = None,
        test: Source | None = None,
        predict: Source | None = None,
        split: Sequence[float] | None = None,
        split_random: bool = False,
        eval_batch_size: int | None = None,
        pin_memory: bool | Literal["auto"] = "auto",
        prefetch: int = 2,
        num_workers: int = 0,
        transform: Transform | None = None,
        return_index: bool = False,
        as_dict: bool = False,
        **options: Unpack[BatchOptions],
    ) -> None:
        super().__init__()
        if split is not None and (val is not None or test is not None):
            raise ValueError("give either split= or val=/test=, not both")
        self.settings = BatchSettings.from_options("DeepRCDataModule", options)
        batch_size = positive_int(batch_size, "batch_size", "DeepRCDataModule")
        if eval_batch_size is not None:
            eval_batch_size = positive_int(eval_batch_size, "eval_batch_size", "DeepRCDataModule")
        self.sources: dict[Split, Source | None] = {"train": source, "val": val, "test": test, "predict": predict}
        self.features, self.target = features, target
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.split, self.split_random = split, split_random
        self.pin_memory, self.prefetch, self.num_workers = pin_memory, int(prefetch), int(num_workers)
        self.transform, self.return_index, self.as_dict = transform, return_index, as_dict
        self.tables: dict[Split, GlobalTable] = {}
        self.batches: dict[Split, TableBatches] = {}
        self._train_loader: DeepRCDataLoader | None = None
        self._pending_state: dict[str, Any] | None = None
        self._epoch: int | None = None
        #: (world size, rank) of the attached Trainer, once setup() ran under one
        self._trainer_ranks: tuple[int, int] | None = None

    # ---------------------------------------------------------------- setup
    def _join_trainer(self) -> None:
        """Take rank and world size from the attached Trainer; refuse a launcher that started other ranks.

        Every rank decides alone from its own Trainer and variables, so a mismatch fails each
        rank before any collective, instead of two models training on halves with exit 0.
        """
        trainer = getattr(self, "trainer", None)
        if trainer is None or self._trainer_ranks is not None:
            return
        world, rank = int(trainer.world_size), int(trainer.global_rank)
        try:
            launched = detect_wiring()
        except WiringError:
            launched = (
                None  # variables that do not say the rank (Lightning's launcher beyond node 0): trust the Trainer
            )
        if launched is not None and launched.world_size > 1 and (launched.world_size, launched.rank) != (world, rank):
            strategy = type(trainer.strategy).__name__
            raise DeepRCError(
                f"DeepRCDataModule: {launched.source} started {launched.world_size} ranks (this is rank "
                f"{launched.rank}), but the Trainer's {strategy} runs this process as rank {rank} of {world}, so each "
                f"rank would train its own model on its own share of the data. Use Trainer(strategy=DeepRCStrategy()) "
                f"(or strategy='deeprc'), or strategy='ddp' with devices x num_nodes = {launched.world_size}"
            )
        if world > 1:
            process_group_communicator(world, rank)  # tables read from here on span the Trainer's ranks
        self._trainer_ranks = (world, rank)

    def _resolve(self, source: Source, name: str) -> GlobalTable:
        table = resolve_source(source, f"DeepRCDataModule {name}")
        if self._trainer_ranks is not None and table.world_size != self._trainer_ranks[0]:
            raise DeepRCError(
                f"DeepRCDataModule {name}: the GlobalTable was built over {table.world_size} rank(s), but the Trainer "
                f"runs {self._trainer_ranks[0]} processes (tables built before trainer.fit(), e.g. under ddp_spawn, "
                "are copies in every process). Pass a path or a function returning the table: each rank then reads "
                "its own share inside the job"
            )
        return table

    def _resolve_tables(self, wanted: Sequence[Split]) -> None:
        if self.split is not None and "train" not in self.tables:
            if self.sources["train"] is None:
                raise ValueError("split= needs a source")
            whole = self._resolve(self.sources["train"], "source")
            for name, part in zip(
                ("train", "val", "test"), _split_table(whole, self.split, self.split_random, self.settings.seed)
            ):
                self.tables[name] = part  # type: ignore[index]
        for name in wanted:
            src = self.sources[name]
            if name not in self.tables and src is not None:
                self.tables[name] = self._resolve(src, name)

    def setup(self, stage: str | None = None) -> None:
        """Read/prepare the tables of ``stage`` on every rank and agree their batch plans (collective).

        Under a Trainer, ranks come from it (see the module docs); a split of ``split=`` is
        spread evenly over the ranks in global row order (``even='auto'``), so every rank gets
        validation samples and validation comes after training in time.
        """
        self._join_trainer()
        wanted = _STAGE_SPLITS.get(stage, SPLITS)
        self._resolve_tables(wanted)
        for name in wanted:
            if name in self.tables and name not in self.batches:
                self.batches[name] = self._make_batches(name, self.tables[name])

    def _make_batches(self, name: Split, table: GlobalTable) -> TableBatches:
        target = self.target
        if name == "predict" and target is not None:
            names = [target] if isinstance(target, str) else list(target)
            if any(c not in table.column_names for c in names):
                target = None  # prediction data may come without targets
        train = name == "train"
        if name == "predict":  # every row once: unshuffled, padded (equal steps on every rank), nothing dropped
            batches = prediction_batches(
                table, self.features, target, self.eval_batch_size, self.settings, what="DeepRCDataModule predict"
            )
            return batches  # its padding is expected (GatherPredictions removes it): no warning
        batches = TableBatches(
            table,
            self.features,
            target,
            self.batch_size if train else self.eval_batch_size,
            self.settings if train else self.settings.for_eval(),
            what=f"DeepRCDataModule {name}",
        )
        warn_plan(batches, f"DeepRCDataModule {name}")
        return batches

    # ---------------------------------------------------------- dataloaders
    def _device(self) -> torch.device | None:
        trainer = getattr(self, "trainer", None)
        device = getattr(getattr(trainer, "strategy", None), "root_device", None)
        return device if isinstance(device, torch.device) else None

    def _missing(self, name: Split) -> DeepRCError:
        """The error of trainer.test/predict without data for it (an empty loader would only warn)."""
        if self.split is not None and name == "test":
            return DeepRCError(
                f"DeepRCDataModule: trainer.test needs a test split, but split={list(self.split)} makes only "
                "(train, val); give three fractions (train, val, test) or test=<path, table or function>"
            )
        return DeepRCError(f"DeepRCDataModule: trainer.{name} needs data: pass {name}=<path, table or function>")

    def _loader(self, name: Split) -> DeepRCDataLoader | list[Any]:
        if name not in self.batches:
            has_split = self.split is not None and (name == "val" or (name == "test" and len(self.split) == 3))
            if self.sources[name] is None and not (name == "train" and self.split is not None) and not has_split:
                if name in ("test", "predict"):
                    raise self._missing(name)
                return []  # Lightning skips a validation loop whose loader is empty
            self.setup({"train": "fit", "val": "validate", "test": "test", "predict": "predict"}[name])
            if name not in self.batches:
                return []
        device = self._device()
        cuda = device is not None and device.type == "cuda"
        pin = cuda if self.pin_memory == "auto" else bool(self.pin_memory) and cuda
        stream = BatchStream(
            self.batches[name],
            return_index=self.return_index,
            as_dict=self.as_dict,
            transform=self.transform,
            readonly=self.settings.readonly,
        )
        return DeepRCDataLoader(
            stream, num_workers=self.num_workers, device=device if pin else None, pin_memory=pin, prefetch=self.prefetch
        )

    def train_dataloader(self) -> DeepRCDataLoader | list[Any]:
        """This rank's training batches (shuffled per epoch; resumable)."""
        loader = self._loader("train")
        if isinstance(loader, DeepRCDataLoader):
            if self._pending_state is not None:
                loader.load_state_dict(self._pending_state)
                self._pending_state = None
            elif self._epoch is not None:
                loader.set_epoch(self._epoch)
            self._train_loader = loader
        return loader

    def val_dataloader(self) -> DeepRCDataLoader | list[Any]:
        """This rank's validation batches (in order), or ``[]`` without validation data."""
        return self._loader("val")

    def test_dataloader(self) -> DeepRCDataLoader | list[Any]:
        """This rank's test batches (in order), or ``[]`` without test data."""
        return self._loader("test")

    def predict_dataloader(self) -> DeepRCDataLoader | list[Any]:
        """This rank's prediction batches (in order; targets only if the table has them)."""
        return self._loader("predict")

    # ------------------------------------------------------ epochs, resume
    def set_epoch(self, epoch: int) -> None:
        """Select the training epoch (its shuffle); Lightning does this itself every epoch."""
        self._epoch = int(epoch)
        if self._train_loader is not None:
            self._train_loader.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Training position ``{epoch, batch, seed, ...}`` (Lightning stores it in checkpoints)."""
        if self._train_loader is not None:
            return {"train": self._train_loader.state_dict()}
        return {"train": self._pending_state} if self._pending_state else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume: the next training epoch yields exactly the batches not seen before the checkpoint."""
        state = state_dict.get("train")
        if not state:
            return
        if "train" in self.batches:
            check_resumable(state, self.batches["train"])
        if self._train_loader is not None:
            self._train_loader.load_state_dict(state)
        else:
            self._pending_state = dict(state)
