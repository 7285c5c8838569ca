"""The adapter contract: what every framework adapter (deeprc-torch, deeprc-tf, your own) builds on.

An adapter turns :class:`~deeprc_core.TableBatches` into its framework's batches and
nothing more. What it must not decide on its own lives here, once, so that the
adapters agree:

* **sources** — :func:`resolve_source` turns what a user passes (a GlobalTable, a path to
  Parquet/CSV/Arrow IPC, a file or a folder, or a function returning a GlobalTable) into a
  GlobalTable, with one error naming the accepted kinds;
* **plan diagnostics** — :func:`warn_plan` says once, on rank 0, in the same words for
  every adapter, how many samples ``even='drop'`` skips or ``even='pad'`` repeats;
* **resume checks** — :func:`check_resumable` refuses a saved mid-epoch position that
  would not select the same batches under the current plan.

The copy policy (DLPack export, read-only memory, alignment, counted copies) is in
:mod:`deeprc_core.views` and :mod:`deeprc_core.copies`; an adapter calls those.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DeepRCError
from .readers import read_csv, read_ipc, read_parquet
from .table import GlobalTable

if TYPE_CHECKING:
    from .batches import TableBatches

#: A table, a file or folder (Parquet, CSV, Arrow IPC/Feather), or a function returning a table.
#: ``os.PathLike`` is left unsubscripted on purpose: LightningCLI (jsonargparse) then takes a path
#: given for it as a path, where ``os.PathLike[str]`` made it read the file and pass its contents.
Source = GlobalTable | str | os.PathLike | Callable[[], GlobalTable]  # type: ignore[type-arg]

#: What :func:`resolve_source` accepts, in the words of its error message.
ACCEPTED = (
    "a deeprc_core.GlobalTable, a path (Parquet, CSV or Arrow IPC; a file or a folder) "
    "or a function returning a GlobalTable"
)

_CSV = (".csv", ".csv.gz", ".txt")
_IPC = (".arrow", ".feather", ".ipc")


def read_path(path: str | os.PathLike[str]) -> GlobalTable:
    """Read a Parquet/CSV/Arrow file or folder, each rank its own share (collective).

    The format comes from the file name; a folder is read as the format of the files it
    holds (Parquet when there is any).
    """
    p = Path(path)
    name = p.name.lower()
    if name.endswith(_CSV):
        return read_csv(p)
    if name.endswith(_IPC):
        return read_ipc(p)
    if p.is_dir():
        files = [f.name.lower() for f in p.rglob("*") if f.is_file()]
        if not any(f.endswith(".parquet") for f in files):
            if any(f.endswith(_CSV) for f in files):
                return read_csv(p)
            if any(f.endswith(_IPC) for f in files):
                return read_ipc(p)
    return read_parquet(p)


def resolve_source(source: Source, what: str) -> GlobalTable:
    """The GlobalTable of ``source`` (collective for paths; callables are called here, on every rank).

    ``what`` names the caller in errors (e.g. ``"make_dataset"``). A wrong type raises
    TypeError on every rank alike (the check runs before any collective).
    """
    if isinstance(source, GlobalTable):
        return source
    if isinstance(source, (str, os.PathLike)):
        return read_path(source)
    if callable(source):
        table = source()
        if not isinstance(table, GlobalTable):
            raise TypeError(
                f"{what}: the source function returned {type(table).__name__}, not a deeprc_core.GlobalTable"
            )
        return table
    hint = ""
    if type(source).__module__.startswith(("pyarrow", "pandas")):
        kind = "from_pandas" if type(source).__module__.startswith("pandas") else "from_arrow"
        hint = (
            f" (the same whole frame on every rank: deeprc_core.GlobalTable.shard(frame) splits it over the ranks; "
            f"only this rank's part: deeprc_core.GlobalTable.{kind}(frame))"
        )
    raise TypeError(f"{what}: source must be {ACCEPTED}, not {type(source).__name__}{hint}")


def warn_plan(batches: TableBatches, what: str) -> None:
    """Warn once (rank 0) when the plan skips (even='drop') or repeats (even='pad') samples every epoch,
    and when ``dropna_target`` skips samples whose target is NaN.

    Uneven partitions never train silently short or silently weighted: the message gives
    the per-rank counts and the policy to switch to.
    """
    plan = batches.plan
    if plan.rank != 0:
        return
    total = sum(plan.counts)
    unit = "windows" if batches.window is not None else "samples"
    if batches.nan_target_skipped:
        warnings.warn(
            f"{what}: dropna_target=True skips {batches.nan_target_skipped} {unit} whose target is NaN "
            f"({total} remain)",
            stacklevel=3,
        )
    if plan.even == "drop":
        dropped = plan.dropped_total
        if dropped:
            warnings.warn(
                f"{what}: even={batches.even!r} skips {dropped} of {total} {unit} ({100 * dropped / total:.1f}%) "
                f"every epoch because the ranks hold {list(plan.counts)}; even='rebalance' moves rows once so "
                f"every rank holds an equal share of {unit}, even='pad' repeats {unit} instead",
                stacklevel=3,
            )
    elif plan.even == "pad" and (repeated := sum(max(plan.samples_per_epoch - c, 0) for c in plan.counts)):
        # every rank fills samples_per_epoch positions (the same on all ranks)
        warnings.warn(
            f"{what}: even='pad' repeats {repeated} {unit} every epoch (the ranks hold "
            f"{list(plan.counts)}); the repeats are marked in each batch's padding mask. Use even='rebalance' "
            "to move rows instead",
            stacklevel=3,
        )


def check_resumable(state: Mapping[str, Any], batches: TableBatches) -> None:
    """Raise DeepRCError when a saved mid-epoch position cannot mean the same batches under this plan."""
    if int(state.get("batch", 0)) == 0:
        return
    now = {"world_size": batches.comm.size, "num_batches": batches.num_batches, "seed": batches.seed}
    diff = {k: (state.get(k), v) for k, v in now.items() if k in state and state[k] != v}
    if diff:
        detail = ", ".join(f"{k}: saved {a}, now {b}" for k, (a, b) in diff.items())
        raise DeepRCError(
            f"cannot resume mid-epoch: the batch plan changed ({detail}); the saved position would not select the "
            "unseen batches. Resume with the same ranks, data and seed, or from an end-of-epoch checkpoint"
        )


class EpochCursor:
    """The epoch an adapter's next pass runs and the batch it resumes at: resumable iteration, once for all adapters.

    An adapter calls :meth:`begin` when a pass starts (it runs the epoch's collective work,
    e.g. a global reshuffle, in the calling process) and :meth:`advance` per batch handed
    out, :meth:`finish` at the end. A pass that starts after a finished one without
    :meth:`set_epoch` runs the next epoch (a plain ``for epoch ...: for batch in loader``
    loop reshuffles). :meth:`state_dict` / :meth:`load_state_dict` save and restore the
    position, refusing a resume the current plan cannot honour.
    """

    def __init__(self, batches: TableBatches) -> None:
        self.batches = batches
        #: the epoch the next (or current) pass runs
        self.epoch = 0
        #: batches handed out in the current epoch
        self.position = 0
        self._resume: int | None = None
        self._finished = False

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (reshuffles with the same seed); a new epoch starts at its first batch."""
        epoch = int(epoch)
        if epoch != self.epoch:
            self.epoch, self._resume, self.position = epoch, None, 0
        self._finished = False

    def state_dict(self) -> dict[str, Any]:
        """Epoch, batches handed out in it, seed and the plan's shape (to check a resume)."""
        b = self.batches
        return {
            "epoch": self.epoch,
            "batch": self.position,
            "seed": b.seed,
            "num_batches": b.num_batches,
            "world_size": b.comm.size,
            "rank": b.comm.rank,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: the next pass yields batches ``state['batch']`` onwards of ``state['epoch']``."""
        check_resumable(state, self.batches)
        self.epoch = int(state["epoch"])
        self.position = self._resume = int(state["batch"])
        self._finished = False

    def begin(self) -> int:
        """Fix this pass's epoch and first batch; run the epoch's collective work here. Returns the first batch."""
        n = self.batches.num_batches
        if self._resume is not None:
            start, self._resume = self._resume, None
        else:
            start = 0
            if self._finished:  # iterating again without set_epoch: the next epoch
                self.epoch += 1
        if start >= n:  # resumed from the end of an epoch
            self.epoch, start = self.epoch + 1, 0
        self._finished = False
        self.position = start
        self.batches.prepare_epoch(self.epoch)
        return start

    def advance(self) -> None:
        """One more batch of this epoch was handed out."""
        self.position += 1

    def finish(self) -> None:
        """The pass reached the end of its epoch."""
        self._finished = True
