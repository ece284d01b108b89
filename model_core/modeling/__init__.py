"""The SAM 2 networks: image encoder (Hiera + FPN neck), prompt encoder, mask decoder, memory encoder and
memory attention, composed in `SAM2Model`. They know nothing of predictors, trackers or sessions."""

from .sam2_model import ImageFeatures, SAM2Model

__all__ = ["ImageFeatures", "SAM2Model"]
