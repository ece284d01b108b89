"""Drawing results on an image: translucent masks, boxes and "name conf" labels, coloured by class (BGR)."""

from __future__ import annotations

import cv2
import numpy as np

# 20 distinct BGR colours; class k gets PALETTE[k % 20]
PALETTE = np.array([
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72), (23, 204, 146),
    (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0), (147, 69, 52), (255, 115, 100),
    (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203), (200, 149, 255), (199, 55, 255),
], np.uint8)

MASK_ALPHA = 0.5


def draw_results(image: np.ndarray, masks: np.ndarray | None, boxes: np.ndarray | None, names: dict[int, str],
                 show_conf: bool = True, show_labels: bool = True, line_width: int | None = None,
                 row_classes: np.ndarray | None = None) -> np.ndarray:
    """A copy of a (H, W, 3) uint8 image with masks (N, H, W) bool and box rows (N, 6|7) drawn on it."""
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    if out.ndim != 3 or out.shape[2] != 3:
        raise ValueError(f"plot needs an (H, W, 3) image, got shape {out.shape}")
    classes = [int(c) for c in (row_classes if row_classes is not None else range(0 if masks is None else len(masks)))]
    if masks is not None:
        for mask, cls in zip(masks, classes):
            if mask.shape != out.shape[:2]:
                mask = cv2.resize(mask.astype(np.uint8), (out.shape[1], out.shape[0]),
                                  interpolation=cv2.INTER_NEAREST).astype(bool)
            colour = PALETTE[cls % len(PALETTE)].astype(np.float32)
            out[mask] = (out[mask] * (1 - MASK_ALPHA) + colour * MASK_ALPHA).astype(np.uint8)
    if boxes is not None:
        lw = line_width or max(round(sum(out.shape[:2]) / 2 * 0.003), 2)
        for row, cls in zip(boxes, classes):
            colour = tuple(int(v) for v in PALETTE[cls % len(PALETTE)])
            x1, y1, x2, y2 = (int(round(float(v))) for v in row[:4])
            cv2.rectangle(out, (x1, y1), (x2, y2), colour, lw, cv2.LINE_AA)
            text = " ".join(t for t in (names.get(cls, str(cls)) if show_labels else "",
                                        f"{float(row[-2]):.2f}" if show_conf else "") if t)
            if text:
                scale = lw / 3
                (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, max(lw - 1, 1))
                top = y1 - th - 3 if y1 - th - 3 >= 0 else y1 + th + 3
                cv2.rectangle(out, (x1, top), (x1 + tw, y1), colour, -1, cv2.LINE_AA)
                cv2.putText(out, text, (x1, max(y1 - 2, th)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                            max(lw - 1, 1), cv2.LINE_AA)
    return out
