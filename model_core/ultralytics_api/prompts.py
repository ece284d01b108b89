"""Ultralytics' prompt conventions, turned into per-object arrays in image pixels.

`points` (N, 2): one object per point; (N, P, 2): N objects of P points each; (2,): one object, one point.
`labels` default to 1 (foreground); `bboxes` (4,) or (N, 4) xyxy, one object each, merged with the points of the
object at the same index; `masks` (H, W) or (N, H, W) binary, one object each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ObjectPrompts:
    """N objects' prompts: points (N, P, 2) with labels (N, P), boxes (N, 4), masks (N, H, W); any may be None."""

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    boxes: np.ndarray | None = None
    masks: np.ndarray | None = None

    def __len__(self) -> int:
        return next(len(a) for a in (self.points, self.boxes, self.masks) if a is not None)

    def one(self, i: int) -> dict:
        """Object i's prompts as `VideoTracker.add_prompt` keyword arguments."""
        out = {}
        if self.points is not None:
            out.update(points=self.points[i], labels=self.labels[i])
        if self.boxes is not None:
            out["box"] = self.boxes[i]
        if self.masks is not None:
            out["mask"] = self.masks[i]
        return out


def object_prompts(bboxes=None, points=None, labels=None, masks=None) -> ObjectPrompts | None:
    """Check and shape Ultralytics-style prompts; None when none are given."""
    if points is None and labels is not None:
        raise ValueError("labels were given without points")
    pts = labs = boxes = mask_arr = None
    if points is not None:
        pts = _array(points, np.float32, "points")
        if pts.ndim == 1:
            pts = pts[None]
        if pts.ndim not in (2, 3) or pts.shape[-1] != 2 or pts.shape[-2] == 0:
            raise ValueError(f"points must be [x, y], [[x, y], ...] (one object each) or [[[x, y], ...], ...] "
                             f"(one object of several points each), got shape {pts.shape}")
        if pts.ndim == 2:  # flat: one object per point
            pts = pts[:, None]
        if labels is None:
            labs = np.ones(pts.shape[:2], np.int64)
        else:
            labs = _array(labels, np.int64, "labels")
            if labs.size != pts.shape[0] * pts.shape[1]:
                raise ValueError(f"{labs.size} labels for {pts.shape[0] * pts.shape[1]} points "
                                 f"({pts.shape[0]} objects of {pts.shape[1]} points)")
            labs = labs.reshape(pts.shape[:2])
            if not np.isin(labs, (0, 1)).all():
                raise ValueError(f"labels must be 1 (foreground) or 0 (background), got {sorted(set(labs.ravel()))}")
    if bboxes is not None:
        boxes = _array(bboxes, np.float32, "bboxes")
        if boxes.ndim == 1:
            boxes = boxes[None]
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"bboxes must be [x1, y1, x2, y2] or a list of them, got shape {boxes.shape}")
        if ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any():
            raise ValueError("bboxes must be [x1, y1, x2, y2] with x1 <= x2 and y1 <= y2")
    if masks is not None:
        mask_arr = np.asarray(masks)
        if mask_arr.ndim == 2:
            mask_arr = mask_arr[None]
        if mask_arr.ndim != 3 or 0 in mask_arr.shape:
            raise ValueError(f"masks must be (H, W) or (N, H, W), got shape {mask_arr.shape}")
        mask_arr = mask_arr > 0
    counts = {name: len(a) for name, a in (("points", pts), ("bboxes", boxes), ("masks", mask_arr)) if a is not None}
    if len(set(counts.values())) > 1:
        raise ValueError("prompts for different numbers of objects: "
                         + ", ".join(f"{n} {name}" for name, n in counts.items()))
    if not counts:
        return None
    return ObjectPrompts(pts, labs, boxes, mask_arr)


def _array(value, dtype, name: str) -> np.ndarray:
    try:
        out = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numbers in (nested) lists of equal lengths: {exc}") from None
    if out.size and not np.isfinite(out).all():
        raise ValueError(f"{name} must be finite numbers")
    return out
