"""deeprc-torch: Deep RC global tables for PyTorch and Lightning.

Lightning (``import lightning as L``)::

    trainer = L.Trainer(strategy=DeepRCStrategy(), max_epochs=3)
    trainer.fit(model, datamodule=DeepRCDataModule("data/", ["f0", "f1"], "y", batch_size=256))

The same classes for ``import pytorch_lightning as pl`` are in :mod:`deeprc_torch.pl`.
Plain PyTorch: :func:`init_process_group` from any launcher's variables, then
:func:`loader`. Importing this package registers a deeprc-core communicator over
torch.distributed (:mod:`deeprc_torch.comm`). Lightning is imported only when one of its
classes is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .comm import TorchCommunicator, register
from .distributed import DEFAULT_PG_TIMEOUT, init_process_group, pg_timeout, rendezvous
from .loaders import BatchStream, DeepRCDataLoader, loader
from .tensors import ReadOnlyBatchWarning, TensorBatch, to_tensors

if TYPE_CHECKING:
    from .lit import DeepRCDataModule, DeepRCEnvironment, DeepRCStrategy, GatherPredictions

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PG_TIMEOUT",
    "BatchStream",
    "DeepRCDataLoader",
    "DeepRCDataModule",
    "DeepRCEnvironment",
    "DeepRCStrategy",
    "GatherPredictions",
    "ReadOnlyBatchWarning",
    "TensorBatch",
    "TorchCommunicator",
    "init_process_group",
    "loader",
    "pg_timeout",
    "rendezvous",
    "to_tensors",
]

register()

_LIGHTNING = ("DeepRCDataModule", "DeepRCEnvironment", "DeepRCStrategy", "GatherPredictions")


def __getattr__(name: str) -> Any:
    if name in _LIGHTNING:  # imported lazily: plain-torch users do not pay for importing Lightning
        from . import lit

        return getattr(lit, name)
    raise AttributeError(f"module 'deeprc_torch' has no attribute {name!r}")
