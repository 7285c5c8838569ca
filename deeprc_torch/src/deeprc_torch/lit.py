"""DeepRCDataModule, DeepRCEnvironment, DeepRCStrategy and GatherPredictions for ``import lightning as L``.

Built by :func:`deeprc_torch.flavours.lightning_classes`; :mod:`deeprc_torch.pl` has the same for ``pytorch_lightning``.
"""

from .flavours import lightning_classes

DeepRCEnvironment, DeepRCStrategy, DeepRCDataModule, GatherPredictions = lightning_classes("lightning", __name__)
__all__ = ["DeepRCDataModule", "DeepRCEnvironment", "DeepRCStrategy", "GatherPredictions"]
