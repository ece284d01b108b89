"""A built SAM2Model from what users type: a model name or a checkpoint path, and an Ultralytics device string.

One implementation for every front end that takes such names (auto-annotate, the Ultralytics-style API).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .build import build_model
from .configs import canonical_name
from .modeling.sam2_model import SAM2Model
from .weights import closest_model, read_state_dict


def resolve_device(device: str | int | torch.device | None = None) -> torch.device:
    """Ultralytics' device strings: "" or None (a GPU when there is one), "cpu", "0" / 0 (GPU 0), "0,1" (the first
    GPU listed: one model runs on one GPU), "cuda:1", "mps"."""
    if isinstance(device, torch.device):
        return device
    text = "" if device is None else str(device).strip().lower()
    if not text:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    first = text.split(",")[0].strip()
    if first.isdigit():
        return torch.device(f"cuda:{first}")
    try:
        return torch.device(text)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}: use 'cpu', '0' (a GPU index), 'cuda:0' or ''") from exc


def load_model(spec: str | Path, weights: str | Path | None = None, device: str | int | torch.device | None = None,
               image_size: int | None = None) -> SAM2Model:
    """A SAM2Model from a name ("sam2.1_b.pt", "sam2_t", "sam2.1_hiera_large") or a checkpoint path.

    A path that exists is loaded (its model picked by its file name, else by its parameters). A name loads the
    cached official checkpoint (downloaded from Meta on first use) unless `weights` names another file or "random".
    """
    if not isinstance(spec, (str, Path)) or not str(spec).strip():
        raise ValueError(f"model must be a name such as 'sam2.1_b.pt', a checkpoint path, or a SAM2Model; got {spec!r}")
    device = resolve_device(device)
    path = Path(spec)
    if weights is None and path.is_file():
        return build_model(checkpoint_model_name(path), weights=path, device=device, image_size=image_size)
    return build_model(model_name(spec), weights=weights, device=device, image_size=image_size)


def model_name(spec: str | Path) -> str:
    """Meta's name for a model name users type; a clear error for a missing file or an unknown name."""
    try:
        return canonical_name(str(spec))
    except ValueError as exc:
        path = Path(spec)
        if path.suffix not in ("", ".pt", ".pth") or len(path.parts) > 1:
            raise ValueError(f"no checkpoint file at {spec}") from None
        raise ValueError(f"{spec!r} is neither a checkpoint file nor a known model name ({exc})") from None


def checkpoint_model_name(path: Path) -> str:
    """The model a checkpoint file holds: by its file name when that is a model name, else by its parameters."""
    try:
        return canonical_name(path.name)
    except ValueError:
        return closest_model(read_state_dict(path))
