"""DeepRCDataModule, DeepRCEnvironment and DeepRCStrategy for scripts that ``import pytorch_lightning as pl``.

The same classes for ``import lightning as L`` live in :mod:`deeprc_torch` (:mod:`deeprc_torch.lit`);
both flavours share one implementation (:mod:`deeprc_torch.datamodule`,
:mod:`deeprc_torch.environment`, :mod:`deeprc_torch.strategy`). Lightning's Trainer
accepts only its own package's classes, so use the flavour your script imports.
"""

from __future__ import annotations

from lightning_fabric.plugins.environments import ClusterEnvironment
from pytorch_lightning import Callback, LightningDataModule
from pytorch_lightning.strategies import DDPStrategy, StrategyRegistry

from .datamodule import DataModuleLogic
from .environment import EnvironmentLogic
from .prediction import GatherPredictionsLogic
from .strategy import StrategyLogic

__all__ = ["DeepRCDataModule", "DeepRCEnvironment", "DeepRCStrategy", "GatherPredictions"]


class DeepRCEnvironment(EnvironmentLogic, ClusterEnvironment):
    """Lightning cluster environment from ``deeprc_core.detect_wiring()`` (any launcher)."""


class DeepRCStrategy(StrategyLogic, DDPStrategy):
    """DDP over DeepRCEnvironment: nccl on CUDA, gloo otherwise, a 5-minute process-group timeout."""

    environment_class = DeepRCEnvironment


# Trainer(strategy="deeprc") and LightningCLI's --trainer.strategy deeprc
StrategyRegistry.register("deeprc", DeepRCStrategy, description=DeepRCStrategy.__doc__, override=True)


class DeepRCDataModule(DataModuleLogic, LightningDataModule):
    """Deep RC global tables as a LightningDataModule (documented in :mod:`deeprc_torch`)."""


class GatherPredictions(GatherPredictionsLogic, Callback):
    """``trainer.predict`` with DeepRCDataModule: every row once, in global order, on ``root`` (:attr:`predictions`)."""
