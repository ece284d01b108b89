"""build_model: a model name and a weights source in, a ready SAM2Model (eval mode, on its device) out."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .configs import get_config
from .modeling.sam2_model import SAM2Model
from .weights import load_into, read_state_dict, resolve_checkpoint

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_BANNER = (
    "!!! model {name} has RANDOM, UNTRAINED weights (seed {seed}): its masks are meaningless. "
    "Use it only for tests, benchmarks and offline smoke runs. !!!"
)


def build_model(
    name: str = "sam2.1_t",
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    image_size: int | None = None,
    sha256: str | None = None,
    seed: int = 0,
) -> SAM2Model:
    """Build one of the eight SAM 2 / 2.1 models.

    weights: a checkpoint path; "random" for seeded untrained weights; None to use the cached official
    checkpoint (downloaded from Meta on first use, checked against `sha256` when given).
    """
    cfg = get_config(name, image_size)
    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = SAM2Model(cfg)
        log.warning(RANDOM_WEIGHTS_BANNER.format(name=cfg.name, seed=seed))
        model.random_weights = True
    else:
        path = Path(weights) if weights is not None else resolve_checkpoint(cfg.name, sha256=sha256)
        with torch.device("meta"):
            model = SAM2Model(cfg)
        model = model.to_empty(device="cpu")
        load_into(model, read_state_dict(path))
        model.random_weights = False
    return model.to(device).eval().requires_grad_(False)
