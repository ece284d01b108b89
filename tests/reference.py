"""Meta's sam2==1.1.0 as a correctness oracle: build its models with seeded random weights."""

from __future__ import annotations

import functools

import pytest
import torch

sam2 = pytest.importorskip("sam2", reason="the reference oracle (pip install -e .[test]) is not installed")
from sam2.build_sam import build_sam2  # noqa: E402

REF_CONFIG_FILES = {
    "sam2.1_hiera_tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_large": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2_hiera_tiny": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_small": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_base_plus": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_large": "configs/sam2/sam2_hiera_l.yaml",
}


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturb every parameter with seeded noise so that no zero- or one-initialised tensor hides a bug."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return model


def build_reference(name: str, image_size: int | None = None, seed: int = 0):
    """Meta's SAM2Base for a canonical name, on CPU, eval mode, seeded random weights."""
    overrides = [] if image_size is None else [f"++model.image_size={image_size}"]
    torch.manual_seed(seed)
    model = build_sam2(REF_CONFIG_FILES[name], ckpt_path=None, device="cpu", hydra_overrides_extra=overrides)
    return randomize_(model, seed).eval().requires_grad_(False)


@functools.lru_cache(maxsize=3)
def reference_model(name: str, image_size: int | None = None, seed: int = 0):
    """`build_reference`, cached: several test modules share the same tiny reference."""
    return build_reference(name, image_size, seed)


def ours_from_reference(ref, name: str, image_size: int | None = None):
    """Our SAM2Model holding exactly the reference's weights (strict load)."""
    from model_core import SAM2Model, get_config

    ours = SAM2Model(get_config(name, image_size))
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours.eval().requires_grad_(False)


def fit_to_image_size(predictor, image_size: int):
    """Meta's SAM2ImagePredictor hard-codes the 1024 px feature sizes: set them for another model input size."""
    s = image_size // 16
    predictor._bb_feat_sizes = [(4 * s, 4 * s), (2 * s, 2 * s), (s, s)]
    return predictor


def max_rel_diff(ref: torch.Tensor, ours: torch.Tensor) -> float:
    """max |ref - ours| relative to the reference's scale (its max abs value, at least 1)."""
    scale = max(ref.abs().max().item(), 1.0)
    return (ref.float() - ours.float()).abs().max().item() / scale
