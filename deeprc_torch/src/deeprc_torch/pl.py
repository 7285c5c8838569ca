"""DeepRCDataModule, DeepRCEnvironment, DeepRCStrategy and GatherPredictions for ``import pytorch_lightning as pl``.

Built by :func:`deeprc_torch.flavours.lightning_classes`; :mod:`deeprc_torch` (:mod:`deeprc_torch.lit`) has the same
for ``lightning``. Lightning's Trainer accepts only its own package's classes: use the flavour your script imports.
"""

from .flavours import lightning_classes

DeepRCEnvironment, DeepRCStrategy, DeepRCDataModule, GatherPredictions = lightning_classes(
    "pytorch_lightning", __name__
)
__all__ = ["DeepRCDataModule", "DeepRCEnvironment", "DeepRCStrategy", "GatherPredictions"]
