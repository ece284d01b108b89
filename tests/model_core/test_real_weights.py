"""With Meta's real checkpoints present, our model reproduces the published IoU predictions.

Runs only when SAM2_WEIGHTS_DIR holds the official files and `car.png` (the transformers SAM 2 example
image); it is how a user verifies their weights. Skipped in CI, where no weights can be downloaded.
"""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from model_core import ImagePredictor, build_model

# three-mask IoU predictions for the point (1000, 600) on car.png (HF convert_sam2_to_hf.py)
PUBLISHED = {
    "sam2.1_hiera_tiny": [0.0316, 0.9647, 0.1029],
    "sam2.1_hiera_small": [0.9664, 0.1494, 0.0456],
    "sam2.1_hiera_base_plus": [0.0361, 0.9775, 0.1307],
    "sam2.1_hiera_large": [0.9648, 0.0371, 0.1898],
    "sam2_hiera_tiny": [0.0439, 0.9567, 0.1415],
    "sam2_hiera_small": [0.9593, 0.1633, 0.0392],
    "sam2_hiera_base_plus": [0.0423, 0.9815, 0.0897],
    "sam2_hiera_large": [0.9514, 0.0535, 0.1787],
}

WEIGHTS = Path(os.environ.get("SAM2_WEIGHTS_DIR", Path.home() / ".cache" / "sam2-service"))


@pytest.mark.real_weights
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_iou_predictions_on_car_png(name):
    ckpt, image_path = WEIGHTS / f"{name}.pt", WEIGHTS / "car.png"
    if not (ckpt.is_file() and image_path.is_file()):
        pytest.skip(f"needs {ckpt} and {image_path} (real weights are not downloadable here)")
    image = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
    predictor = ImagePredictor(build_model(name, weights=ckpt))
    predictor.set_image(image)
    _, scores, _ = predictor.predict(point_coords=np.array([[1000, 600]]), point_labels=np.array([1]))
    np.testing.assert_allclose(scores, PUBLISHED[name], atol=1e-2)
