"""SAM 2 / SAM 2.1 in plain PyTorch: networks, checkpoint loading, image predictor, mask generator."""

from .build import build_model
from .configs import CONFIGS, ModelConfig, canonical_name, get_config
from .image_predictor import ImagePredictor
from .sam2_model import ImageFeatures, SAM2Model

__all__ = [
    "CONFIGS", "ImageFeatures", "ImagePredictor", "ModelConfig", "SAM2Model", "build_model", "canonical_name",
    "get_config",
]
