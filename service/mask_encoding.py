"""Masks to the wire formats (COCO RLE, polygons, PNG) and client RLE back to a mask prompt, safely.

Client RLE is parsed here in numpy rather than by pycocotools' C decoder, which trusts its counts
(counts that add up to more than height x width would write past its buffer).
"""

from __future__ import annotations

import base64
from typing import Literal

import cv2
import numpy as np

from model_core.mask_ops import encode_rle

MaskFormat = Literal["rle", "polygon", "png"]
MASK_FORMATS: tuple[str, ...] = ("rle", "polygon", "png")
MASK_INPUT_LOGIT = 20.0  # a binary mask prompt becomes logits of +-20 (Meta's predictor clamps logits to +-32)


def encode_masks(masks: np.ndarray, fmt: str) -> list[dict]:
    """(N, H, W) bool -> one JSON-ready dict per mask, all carrying `size` [H, W]."""
    if fmt == "rle":
        return encode_rle(masks)
    h, w = masks.shape[-2:]
    if fmt == "polygon":
        return [{"size": [h, w], "polygons": mask_to_polygons(m)} for m in masks]
    if fmt == "png":
        return [{"size": [h, w], "png": mask_to_png(m)} for m in masks]
    raise ValueError(f"unknown mask format {fmt!r}")


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer contours as COCO polygons [x0, y0, x1, y1, ...] in pixel coordinates; holes are not represented."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1).astype(float).tolist() for c in contours]


def mask_to_png(mask: np.ndarray) -> str:
    """A single-channel 8-bit PNG (0 background, 255 mask), base64."""
    ok, buf = cv2.imencode(".png", mask.astype(np.uint8) * 255)
    if not ok:  # pragma: no cover - opencv always encodes a uint8 image
        raise RuntimeError("PNG encoding failed")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def _counts_from_string(s: str) -> list[int]:
    """pycocotools' compressed counts (6-bit chunks, differential from the second run on), validated."""
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("RLE counts string ends inside a number")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"invalid character {s[p]!r} in RLE counts")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if k > 7:
                raise ValueError("RLE count too large")
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_to_mask(rle: dict) -> np.ndarray:
    """COCO RLE (compressed counts str, or uncompressed counts list) -> (H, W) bool; ValueError if malformed."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    counts = _counts_from_string(counts) if isinstance(counts, str) else [int(c) for c in counts]
    arr = np.asarray(counts, dtype=np.int64)
    if (arr < 0).any():
        raise ValueError("RLE counts must not be negative")
    if int(arr.sum()) != h * w:
        raise ValueError(f"RLE counts add up to {int(arr.sum())} pixels, but size {h}x{w} has {h * w}")
    values = np.arange(len(arr)) % 2 == 1
    flat = np.repeat(values, arr)
    return flat.reshape(w, h).T  # column-major, as COCO


def mask_prompt_logits(mask: np.ndarray, low_res: int) -> np.ndarray:
    """A binary mask at any size -> (1, low_res, low_res) float32 logits for the decoder's mask prompt."""
    frac = cv2.resize(mask.astype(np.float32), (low_res, low_res), interpolation=cv2.INTER_AREA)
    return ((frac * 2.0 - 1.0) * MASK_INPUT_LOGIT)[None].astype(np.float32)
