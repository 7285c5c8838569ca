"""Deep RC's Lightning classes, built once for either flavour of Lightning.

Lightning ships as ``lightning`` (``import lightning as L``) and as ``pytorch_lightning``
(``import pytorch_lightning as pl``), and its Trainer accepts only its own package's classes.
:func:`lightning_classes` builds the four classes for one flavour from the shared logic
(:mod:`deeprc_torch.datamodule`, :mod:`deeprc_torch.environment`, :mod:`deeprc_torch.strategy`,
:mod:`deeprc_torch.prediction`); :mod:`deeprc_torch.lit` and :mod:`deeprc_torch.pl` only
name the flavour.
"""

from __future__ import annotations

import importlib
from typing import Literal, NamedTuple

from .datamodule import DataModuleLogic
from .environment import EnvironmentLogic
from .prediction import GatherPredictionsLogic
from .strategy import StrategyLogic

Flavour = Literal["lightning", "pytorch_lightning"]
#: Where each flavour keeps its trainer package and its cluster environments
_PACKAGES: dict[str, tuple[str, str]] = {
    "lightning": ("lightning.pytorch", "lightning.fabric.plugins.environments"),
    "pytorch_lightning": ("pytorch_lightning", "lightning_fabric.plugins.environments"),
}


class LightningClasses(NamedTuple):
    """The classes of one Lightning flavour, in the order :mod:`deeprc_torch.lit` unpacks them."""

    DeepRCEnvironment: type[EnvironmentLogic]
    DeepRCStrategy: type[StrategyLogic]
    DeepRCDataModule: type[DataModuleLogic]
    GatherPredictions: type[GatherPredictionsLogic]


def lightning_classes(flavour: Flavour, module: str) -> LightningClasses:
    """The classes for ``flavour``, named as attributes of ``module`` (so pickle and LightningCLI find them).

    Also registers ``Trainer(strategy="deeprc")`` (and LightningCLI's ``--trainer.strategy deeprc``)
    in that flavour's strategy registry.
    """
    trainer_package, environments = _PACKAGES[flavour]
    pl = importlib.import_module(trainer_package)
    strategies = importlib.import_module(f"{trainer_package}.strategies")
    cluster_environment = importlib.import_module(environments).ClusterEnvironment

    class DeepRCEnvironment(EnvironmentLogic, cluster_environment):  # type: ignore[misc,valid-type]
        """Lightning cluster environment from ``deeprc_core.detect_wiring()`` (any launcher)."""

    class DeepRCStrategy(StrategyLogic, strategies.DDPStrategy):  # type: ignore[misc,name-defined]
        """DDP over DeepRCEnvironment: nccl on CUDA, gloo otherwise, a 5-minute process-group timeout."""

        environment_class = DeepRCEnvironment

    class DeepRCDataModule(DataModuleLogic, pl.LightningDataModule):  # type: ignore[misc,name-defined]
        """Deep RC global tables as a LightningDataModule (documented in :mod:`deeprc_torch`)."""

    class GatherPredictions(GatherPredictionsLogic, pl.Callback):  # type: ignore[misc,name-defined]
        """``trainer.predict`` with DeepRCDataModule: every row once, in global order, on ``root`` (:attr:`predictions`)."""

    classes = LightningClasses(DeepRCEnvironment, DeepRCStrategy, DeepRCDataModule, GatherPredictions)
    for cls in classes:
        cls.__module__, cls.__qualname__ = module, cls.__name__
    strategies.StrategyRegistry.register("deeprc", DeepRCStrategy, description=DeepRCStrategy.__doc__, override=True)
    return classes
