"""Model loading the way Ultralytics users name models: "sam2.1_b.pt", a checkpoint path, or a built model."""

from __future__ import annotations

from pathlib import Path

import torch

from ..build import build_model
from ..configs import canonical_name
from ..modeling.sam2_model import SAM2Model
from ..weights import closest_model, read_state_dict
from .options import resolve_device


def load_model(spec, image_size: int | None = None, device=None) -> SAM2Model:
    """A SAM2Model from a name ("sam2.1_b.pt", "sam2_t"), a checkpoint path, or a built model; at `image_size`.

    A path that exists is loaded (its model picked by its file name, else by its parameters); any other string is
    a model name, resolved through the weights cache (downloaded from Meta on first use). device None or "":
    a built model stays where it is, others go to a GPU when there is one (Ultralytics' default).
    """
    if isinstance(spec, SAM2Model):
        target = spec.device if device in (None, "") else resolve_device(device)
        return at_image_size(spec, image_size).to(target)
    device = resolve_device(device)
    if not isinstance(spec, (str, Path)) or not str(spec).strip():
        raise ValueError(f"model must be a name such as 'sam2.1_b.pt', a checkpoint path, or a SAM2Model; got {spec!r}")
    path = Path(spec)
    if path.is_file():
        try:
            name = canonical_name(path.name)
        except ValueError:
            name = closest_model(read_state_dict(path))
        return build_model(name, weights=path, device=device, image_size=image_size)
    if path.suffix not in ("", ".pt", ".pth") or len(path.parts) > 1:
        raise ValueError(f"no checkpoint file at {spec}")
    try:
        name = canonical_name(path.name)
    except ValueError as exc:
        raise ValueError(f"{spec!r} is neither a checkpoint file nor a known model name ({exc})") from None
    return build_model(name, device=device, image_size=image_size)


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
