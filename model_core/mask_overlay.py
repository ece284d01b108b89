"""Masks drawn over an image: each tinted in its colour, outlined in white; objects keep one colour per id."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .video_tracker import TrackResult

# distinct RGB colours, object id i gets PALETTE[i % len(PALETTE)]
PALETTE = [(30, 144, 255), (255, 99, 71), (50, 205, 50), (255, 215, 0), (186, 85, 211),
           (0, 206, 209), (255, 140, 0), (255, 105, 180), (154, 205, 50), (106, 90, 205)]


def object_color(obj_id: int) -> tuple[int, int, int]:
    return PALETTE[obj_id % len(PALETTE)]


def overlay_masks(image: np.ndarray, masks: Sequence[np.ndarray], colors: Sequence[tuple[int, int, int]],
                  alpha: float = 0.5) -> np.ndarray:
    """RGB image (H, W, 3) with each (H, W) bool mask tinted in its colour and its outline drawn."""
    out = image.copy()
    for mask, color in zip(masks, colors):
        tint = np.array(color, dtype=np.float32)
        out[mask] = (out[mask].astype(np.float32) * (1 - alpha) + tint * alpha).astype(np.uint8)
    for mask in masks:
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), 2)
    return out


def draw_tracks(image: np.ndarray, result: TrackResult, alpha: float = 0.5) -> np.ndarray:
    """A tracked frame's overlay: every present object in its id's colour."""
    shown = [o for o in result.objects if o.present]
    return overlay_masks(image, [o.mask for o in shown], [object_color(o.obj_id) for o in shown], alpha)
