"""The SAM 2 side of auto-annotation: an ImagePredictor from whatever a user names (Ultralytics' names too)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..build import build_model
from ..configs import canonical_name
from ..image_predictor import ImagePredictor
from ..modeling.sam2_model import SAM2Model
from ..weights import closest_model, read_state_dict


def torch_device(device: str | torch.device = "") -> torch.device:
    """Ultralytics' device strings for torch: "" picks CUDA when there is one, "0" / "0,1" mean cuda:0."""
    text = str(device).strip().lower()
    if not text:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    first = text.split(",")[0]
    return torch.device(f"cuda:{first}" if first.isdigit() else first)


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
    path = Path(sam_model)
    if weights is None and path.is_file():
        weights = path
        try:
            name = canonical_name(path.name)
        except ValueError:
            name = closest_model(read_state_dict(path))
    else:
        name = canonical_name(str(sam_model))
    model = build_model(name, weights=weights, device=torch_device(device), image_size=image_size)
    return ImagePredictor(model, dtype=dtype)
