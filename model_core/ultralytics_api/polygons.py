"""A mask's outline as one polygon (Ultralytics' `masks.xy`): every outer contour, joined into a single ring."""

from __future__ import annotations

import cv2
import numpy as np


def mask_polygon(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (K, 2) float32 pixel (x, y) points; (0, 2) for an empty mask.

    Several regions are joined as Ultralytics joins them: each further contour is entered from its point nearest
    to the outline so far and left the same way, so the result is one closed walk over all regions.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    rings = [c.reshape(-1, 2).astype(np.float32) for c in contours]
    if not rings:
        return np.zeros((0, 2), np.float32)
    rings.sort(key=len, reverse=True)
    outline = rings[0]
    for ring in rings[1:]:
        d = ((outline[:, None, :] - ring[None, :, :]) ** 2).sum(-1)  # (len(outline), len(ring))
        i, j = np.unravel_index(int(d.argmin()), d.shape)
        entered = np.concatenate([ring[j:], ring[: j + 1]])  # around the ring, back to where it was entered
        outline = np.concatenate([outline[: i + 1], entered, outline[i:]])
    return outline
