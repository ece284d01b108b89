"""API prompts -> decoder batches: checked against the limits and the image, grouped by prompt shape.

Objects whose prompts have the same shape (number of points, box or not, mask or not) run in one decoder
call. A request that mixes shapes runs one call per shape: padding points with "not a point" tokens would
let them share a call, but would change the masks from what each object gets when asked alone.
"""

from __future__ import annotations

import numpy as np

from . import errors
from .engine import ObjectGroup
from .mask_encoding import mask_prompt_logits, rle_to_mask
from .schemas import ObjectPrompt
from .settings import Settings


def check_limits(objects: list[ObjectPrompt], settings: Settings) -> None:
    """Too many objects or points: 422 before any image work."""
    if len(objects) > settings.max_objects:
        raise errors.invalid_prompt(f"{len(objects)} objects, over the limit of {settings.max_objects} per request")
    for i, obj in enumerate(objects):
        n = len(obj.points or [])
        if n > settings.max_points:
            raise errors.invalid_prompt(f"object {i} has {n} points, over the limit of {settings.max_points}")


def check_inside(i: int, obj: ObjectPrompt, hw: tuple[int, int]) -> None:
    """422 for points, a box or a mask_input that do not fit an image of size hw (REST and /v1/track)."""
    h, w = hw
    for j, (x, y) in enumerate(obj.points or []):
        if not (0 <= x <= w and 0 <= y <= h):
            raise errors.invalid_prompt(
                f"object {i}: point {j} ({x:g}, {y:g}) is outside the {w}x{h} image (0 <= x <= {w}, 0 <= y <= {h})"
            )
    if obj.box is not None:
        x0, y0, x1, y1 = obj.box
        if not (0 <= x0 and 0 <= y0 and x1 <= w and y1 <= h):
            raise errors.invalid_prompt(f"object {i}: box {obj.box} is outside the {w}x{h} image")
    if obj.mask_input is not None and tuple(obj.mask_input.size) != tuple(hw):
        raise errors.invalid_prompt(
            f"object {i}: mask_input size {obj.mask_input.size} is not the image's [height, width] {list(hw)}"
        )


def _mask_logits(i: int, obj: ObjectPrompt, hw: tuple[int, int], low_res: int) -> np.ndarray:
    rle = obj.mask_input.model_dump()
    if tuple(rle["size"]) != tuple(hw):
        raise errors.invalid_prompt(
            f"object {i}: mask_input size {rle['size']} is not the image's [height, width] {list(hw)}"
        )
    try:
        mask = rle_to_mask(rle)
    except ValueError as exc:
        raise errors.invalid_prompt(f"object {i}: mask_input is not valid RLE: {exc}") from None
    return mask_prompt_logits(mask, low_res)


def build_groups(objects: list[ObjectPrompt], hw: tuple[int, int], low_res: int) -> list[ObjectGroup]:
    """Objects (already limit-checked) on an image of size hw -> decoder groups; 422 for prompts off the image."""
    by_shape: dict[tuple, list[int]] = {}
    for i, obj in enumerate(objects):
        check_inside(i, obj, hw)
        shape = (len(obj.points or []), obj.box is not None, obj.mask_input is not None)
        by_shape.setdefault(shape, []).append(i)
    groups = []
    for (n_points, has_box, has_mask), idx in by_shape.items():
        objs = [objects[i] for i in idx]
        coords = labels = boxes = masks = None
        if n_points:
            coords = np.array([o.points for o in objs], dtype=np.float32)  # (B, N, 2)
            labels = np.array([o.labels if o.labels is not None else [1] * n_points for o in objs], dtype=np.int64)
        if has_box:
            boxes = np.array([o.box for o in objs], dtype=np.float32)  # (B, 4)
        if has_mask:
            masks = np.stack([_mask_logits(i, objects[i], hw, low_res) for i in idx])  # (B, 1, 4s, 4s)
        groups.append(ObjectGroup(idx, coords, labels, boxes, masks))
    return groups
