"""Model loading the way Ultralytics users name models: "sam2.1_b.pt", a checkpoint path, or a built model."""

from __future__ import annotations

import torch

from ..model_loading import load_model as load_named_model, resolve_device
from ..modeling.sam2_model import SAM2Model


def load_model(spec, image_size: int | None = None, device=None) -> SAM2Model:
    """A SAM2Model from a name ("sam2.1_b.pt", "sam2_t"), a checkpoint path, or a built model; at `image_size`.

    Names and paths load as `model_core.model_loading.load_model` loads them. device None or "": a built model
    stays where it is, others go to a GPU when there is one (Ultralytics' default).
    """
    if isinstance(spec, SAM2Model):
        target = spec.device if device in (None, "") else resolve_device(device)
        return at_image_size(spec, image_size).to(target)
    return load_named_model(spec, device=device, image_size=image_size)


def at_image_size(model: SAM2Model, image_size: int | None) -> SAM2Model:
    """The same weights at another input side (a new module; the given one is left as it is)."""
    if image_size is None or image_size == model.cfg.image_size:
        return model
    with torch.device("meta"):
        resized = SAM2Model(model.cfg.with_image_size(image_size))
    resized = resized.to_empty(device=model.device)
    resized.load_state_dict(model.state_dict(), strict=True)
    resized.random_weights = getattr(model, "random_weights", False)
    return resized.eval().requires_grad_(False)


def model_summary(model: SAM2Model) -> tuple[int, int, int]:
    """(layers, parameters, parameters with gradients): layers as Ultralytics counts them, every module."""
    layers = sum(1 for _ in model.modules())
    params = sum(p.numel() for p in model.parameters())
    grads = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return layers, params, grads
