"""What a box source hands the annotator for one image: pixel boxes with class ids (and scores when known)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Detections:
    """N boxes of one image: xyxy in pixels (N, 4) float32, class ids (N,) int64, scores (N,) float32 or None."""

    boxes: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)
        if len(class_ids) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(class_ids)} class ids")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "class_ids", class_ids)
        if self.scores is not None:
            scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
            if len(scores) != len(boxes):
                raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
            object.__setattr__(self, "scores", scores)

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))

    def keep(self, index: np.ndarray) -> "Detections":
        """The detections at a boolean or integer index."""
        scores = None if self.scores is None else self.scores[index]
        return Detections(self.boxes[index], self.class_ids[index], scores)

    def only_classes(self, classes) -> "Detections":
        """The detections whose class id is in `classes` (None keeps all)."""
        if classes is None:
            return self
        return self.keep(np.isin(self.class_ids, np.asarray(list(classes), dtype=np.int64)))


class BoxSource(Protocol):
    """Boxes for each image: an object detector, or a file of boxes someone already has."""

    names: dict[int, str]  # class id -> name, for COCO categories

    def __call__(self, path: Path, image_bgr: np.ndarray) -> Detections:
        """Detections for the image read from `path` (HWC uint8, BGR as OpenCV reads it)."""
        ...
