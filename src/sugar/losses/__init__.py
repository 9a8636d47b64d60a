"""Losses: tensors in, named parts out (`{"contrastive_loss": ...}`); they never see a model."""

from sugar.losses.contrastive import MAX_LOGIT_SCALE, clip_contrastive_loss

__all__ = ["MAX_LOGIT_SCALE", "clip_contrastive_loss"]
