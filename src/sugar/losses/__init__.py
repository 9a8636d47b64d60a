"""Losses: tensors in, named parts out (`{"contrastive_loss": ...}`); they never see a model."""

from sugar.losses.contrastive import MAX_LOGIT_SCALE, clip_contrastive_loss
from sugar.losses.structure import StructureOptions
from sugar.losses.weights import LossWeights

__all__ = ["MAX_LOGIT_SCALE", "LossWeights", "StructureOptions", "clip_contrastive_loss"]
