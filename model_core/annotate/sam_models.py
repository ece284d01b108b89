"""The SAM 2 side of auto-annotation: an ImagePredictor from whatever a user names (Ultralytics' names too)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..image_predictor import ImagePredictor
from ..model_loading import load_model
from ..modeling.sam2_model import SAM2Model


def image_predictor(sam_model, device: str | torch.device = "", weights: str | Path | None = None,
                    image_size: int | None = None, dtype: torch.dtype = torch.float32) -> ImagePredictor:
    """An ImagePredictor from a predictor or built model (used as they are), a checkpoint path, or a model name.

    A name (`sam2_b.pt`, `sam2.1_t`, `sam2.1_hiera_large`) loads the cached official checkpoint (downloaded on first
    use) unless `weights` names another file or "random"; a renamed checkpoint file is recognised by its parameters.
    """
    if isinstance(sam_model, ImagePredictor):
        return sam_model
    if isinstance(sam_model, SAM2Model):
        return ImagePredictor(sam_model, dtype=dtype)
    if not isinstance(sam_model, (str, Path)):
        raise TypeError(f"sam_model must be a name, a path, a SAM2Model or an ImagePredictor, "
                        f"got {type(sam_model).__name__}")
    return ImagePredictor(load_model(sam_model, weights, device, image_size), dtype=dtype)
