"""Auto-annotation: a detector's (or a file's) boxes prompt SAM 2, and the masks are written as dataset labels."""

from .annotator import AnnotateSummary, auto_annotate, segment_boxes
from .box_files import CocoBoxes, YoloLabelBoxes, open_box_file
from .detections import BoxSource, Detections
from .polygons import mask_to_polygon, polygon_to_mask
from .yolo_detector import YoloDetector

__all__ = [
    "AnnotateSummary", "BoxSource", "CocoBoxes", "Detections", "YoloDetector", "YoloLabelBoxes", "auto_annotate",
    "mask_to_polygon", "open_box_file", "polygon_to_mask", "segment_boxes",
]
