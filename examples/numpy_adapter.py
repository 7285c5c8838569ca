"""A whole framework adapter built only on Deep RC's adapter contract: plain NumPy batches.

What docs/adapters.md walks through. Everything a user of an adapter expects — paths or
tables as sources, agreed batch counts on every rank, shuffles, windows, warnings about
skipped samples, ``set_epoch``, resumable ``state_dict``, exactly-once prediction — comes
from the core; the adapter only hands the core's numpy views to its "framework" (here,
none: it yields them as they are). A torch or TF adapter would convert ``batch.x`` with
DLPack at the marked line.

    mpirun -np 2 python examples/numpy_adapter.py          # or torchrun-style env variables
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from deeprc_core.adapter import EpochCursor, Source, resolve_source, warn_plan
from deeprc_core.batch_settings import BatchOptions, BatchSettings
from deeprc_core.prediction import Predictions, predict_all, prediction_batches

from deeprc_core import TableBatches

if TYPE_CHECKING:
    from typing_extensions import Unpack


class NumpyLoader:
    """This rank's batches of ``source`` as ``(x, y)`` numpy arrays (collective to build: agrees the plan)."""

    def __init__(
        self,
        source: Source,
        features: str | Sequence[str],
        target: str | Sequence[str] | None,
        batch_size: int,
        **options: Unpack[BatchOptions],  # shuffle, seed, even, window, drop_last, dtype, ...: the core's
    ) -> None:
        self.features, self.target = features, target
        self.settings = BatchSettings.from_options("NumpyLoader", options)  # checked once, as in every adapter
        table = resolve_source(source, "NumpyLoader")  # a GlobalTable, a path or a function
        self.batches = TableBatches(table, features, target, batch_size, self.settings, what="NumpyLoader")
        warn_plan(self.batches, "NumpyLoader")  # the same words as deeprc-torch and deeprc-tf
        self.cursor = EpochCursor(self.batches)

    def __len__(self) -> int:
        return self.batches.num_batches  # identical on every rank

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (its own shuffle); iterating again without it runs the next epoch."""
        self.cursor.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Where this loader is: save it with your checkpoint."""
        return self.cursor.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume mid-epoch (refused, with the reason, if the plan changed)."""
        self.cursor.load_state_dict(state)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        start = self.cursor.begin()  # runs the epoch's collective work (a global reshuffle) here
        for batch in self.batches.epoch(self.cursor.epoch, start):
            self.cursor.advance()
            yield batch.x, batch.y  # <- a framework adapter converts the views here (DLPack)
        self.cursor.finish()

    def predict(self, predict: Callable[[np.ndarray], Any], source: Source, root: int | None = 0) -> Predictions | None:
        """Every sample of ``source`` predicted once, gathered in global order on ``root`` (collective)."""
        table = resolve_source(source, "NumpyLoader.predict")
        batches = prediction_batches(table, self.features, self.target, 256, self.settings)
        return predict_all(batches, predict, root=root)


def main() -> None:
    """Least squares on ETTh1 by full-batch gradient steps over NumpyLoader batches, averaged across ranks."""
    if __package__ in (None, ""):
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import deeprc_core as drc
    from examples.shipped_data import data_path

    table = drc.read_csv(data_path("ett", "ETTh1.csv"))
    features = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL"]
    stats = table.global_mean_std([*features, "OT"])
    loader = NumpyLoader(table, features, "OT", 512, even="rebalance")
    w = np.zeros(len(features))
    mu = np.array([stats[f][0] for f in features])
    sd = np.array([stats[f][1] for f in features])
    for epoch in range(3):
        for x, y in loader:
            xs = (x - mu) / sd
            grad = xs.T @ (xs @ w - (y - stats["OT"][0])) / len(x)
            w -= 0.1 * np.mean(table.comm.allgather(grad), axis=0)  # the ranks' steps stay identical
        if table.rank == 0:
            print(f"epoch {epoch}: {len(loader)} batches per rank, weights {np.round(w, 3)}")
    got = loader.predict(lambda x: ((x - mu) / sd) @ w + stats["OT"][0], table)
    if got is not None:
        print(f"predicted {len(got)} rows once each; MAE {np.mean(np.abs(got.pred - got.extra['true'])):.3f} °C")


if __name__ == "__main__":
    main()
