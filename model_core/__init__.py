"""SAM 2 / SAM 2.1 in plain PyTorch: networks (`modeling/`), checkpoint loading, and the predictors on top."""

from .annotate import auto_annotate
from .automatic_mask_generator import AutomaticMaskGenerator
from .build import build_model
from .configs import CONFIGS, ModelConfig, canonical_name, get_config
from .image_predictor import ImagePredictor
from .modeling import ImageFeatures, SAM2Model
from .track_video import track_video
from .ultralytics_api import SAM, Results, SAM2DynamicInteractivePredictor, SAM2VideoPredictor
from .video_predictor import VideoPredictor
from .video_tracker import VideoTracker

__all__ = [
    "CONFIGS", "AutomaticMaskGenerator", "ImageFeatures", "ImagePredictor", "ModelConfig", "SAM2Model",
    "Results", "SAM", "SAM2DynamicInteractivePredictor", "SAM2VideoPredictor", "VideoPredictor", "VideoTracker",
    "auto_annotate", "build_model", "canonical_name", "get_config", "track_video",
]
