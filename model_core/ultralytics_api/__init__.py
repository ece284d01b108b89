"""The Ultralytics-style API (`SAM`, `SAM2VideoPredictor`, `SAM2DynamicInteractivePredictor`, `Results`) with
Ultralytics' conventions, on our predictors and tracker. Ultralytics itself is not imported."""

from .dynamic_predictor import NoObjectsError, SAM2DynamicInteractivePredictor
from .results import Boxes, Masks, Results
from .sam import SAM
from .video_predictor import SAM2VideoPredictor

__all__ = ["Boxes", "Masks", "NoObjectsError", "Results", "SAM", "SAM2DynamicInteractivePredictor",
           "SAM2VideoPredictor"]
