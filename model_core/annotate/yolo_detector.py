"""An Ultralytics YOLO model as a box source (the optional `annotate` extra brings `ultralytics`)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .detections import Detections

log = logging.getLogger(__name__)

BOX_TASKS = ("detect", "segment", "pose")  # Ultralytics tasks whose results carry axis-aligned boxes

INSTALL_HINT = ("auto-annotation with a YOLO detector needs Ultralytics: pip install 'sam2-service[annotate]' "
                "(or pass boxes=... : a COCO JSON or a folder of YOLO labels)")


def load_yolo(det_model):
    """A YOLO object from a model name or path (`yolo11x.pt`, `yolo11n.yaml`, `runs/best.pt`), or the object itself."""
    if hasattr(det_model, "predict") and hasattr(det_model, "names"):
        return det_model
    if not isinstance(det_model, (str, Path)):
        raise TypeError(f"det_model must be a YOLO model name, a path or a YOLO object, got {type(det_model).__name__}")
    try:
        from ultralytics import YOLO
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    if str(det_model).lower().endswith((".yaml", ".yml")):
        log.warning("det_model %s is a model description: the detector is built UNTRAINED (random weights), "
                    "its boxes are meaningless (tests and smoke runs only)", det_model)
    return YOLO(str(det_model))


class YoloDetector:
    """Runs a YOLO model on each image; `conf`, `iou`, `imgsz`, `max_det`, `classes`, `device` are its predict args."""

    def __init__(self, det_model, device: str = "", conf: float = 0.25, iou: float = 0.45, imgsz: int = 640,
                 max_det: int = 300, classes=None) -> None:
        self.model = load_yolo(det_model)
        task = getattr(self.model, "task", None)
        if task not in BOX_TASKS:
            raise ValueError(f"det_model is a {task!r} model, which gives no boxes: use a detection, segmentation "
                             "or pose model (e.g. yolo11x.pt)")
        self.names = {int(k): str(v) for k, v in dict(self.model.names).items()}
        self.args = dict(device=device, conf=conf, iou=iou, imgsz=imgsz, max_det=max_det,
                         classes=None if classes is None else list(classes), verbose=False)

    def __call__(self, path: Path, image_bgr: np.ndarray) -> Detections:
        result = self.model.predict(image_bgr, **self.args)[0]  # Ultralytics takes numpy arrays as BGR
        boxes = result.boxes  # (N,) Boxes: xyxy in the image's pixels, cls, conf
        return Detections(boxes.xyxy.cpu().numpy(), boxes.cls.cpu().numpy().astype(np.int64),
                          boxes.conf.cpu().numpy())
