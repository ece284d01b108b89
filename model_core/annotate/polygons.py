"""A mask as one YOLO-segmentation polygon: its outer contours joined into a single closed path.

Ultralytics' convention (`Masks.xyn`): points are OpenCV contour pixels (x = column, y = row), holes are not
represented, several parts become one polygon, normalised by the image width and height. Parts are joined
here by zero-width "keyhole" bridges: each further part is spliced into the path at the pair of points
closest to it, walked round, and left the same way, so filling the path covers every part.
"""

from __future__ import annotations

import cv2
import numpy as np


def mask_to_polygon(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool mask -> (K, 2) float32 pixel points (x, y) of one closed path; (0, 2) for an empty mask."""
    contours, _ = cv2.findContours(np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    parts = sorted((c.reshape(-1, 2) for c in contours), key=lambda c: -cv2.contourArea(c))
    if not parts:
        return np.zeros((0, 2), np.float32)
    path = parts[0]
    for part in parts[1:]:
        path = _splice(path, part)
    return path.astype(np.float32)


def _splice(path: np.ndarray, part: np.ndarray) -> np.ndarray:
    """path with `part` walked round from the point of it closest to the path, and back along the same bridge."""
    d = ((path[:, None, :].astype(np.int64) - part[None, :, :]) ** 2).sum(-1)  # (len(path), len(part))
    a, b = np.unravel_index(int(d.argmin()), d.shape)
    loop = np.concatenate([np.roll(part, -b, axis=0), part[b:b + 1]])  # part from b round to b again
    return np.concatenate([path[:a + 1], loop, path[a:a + 1], path[a + 1:]])


def normalise(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """(K, 2) pixel points -> the same divided by (width, height), clipped to [0, 1]."""
    return (points / np.array([width, height], dtype=np.float32)).clip(0.0, 1.0)


def polygon_to_mask(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """(K, 2) pixel points of one path -> (H, W) bool, filled as OpenCV fills it (a reader's view of a label)."""
    out = np.zeros((height, width), np.uint8)
    if len(points):
        cv2.fillPoly(out, [np.round(points).astype(np.int32).reshape(-1, 1, 2)], 1)
    return out.astype(bool)
