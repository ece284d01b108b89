"""User prompts (clicks, boxes, mask prompts) checked and brought to the model's input coordinates.

One helper for the image predictor, the tracker and the video predictor, so a prompt means the same
everywhere: a box becomes two corner points labelled 2 and 3, placed before the clicks.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .transforms import to_model_coords

BOX_LABELS = (2, 3)  # top-left and bottom-right corner labels of a box prompt
LOW_RES_CLAMP = 32.0  # low-res logits handed back (to be fed in again as a mask prompt) are clamped to +/- this


def as_tensor(x, dtype: torch.dtype, device) -> torch.Tensor | None:
    """Array-like (list, numpy, tensor) -> tensor of dtype on device; None stays None."""
    if x is None:
        return None
    return torch.as_tensor(x if isinstance(x, torch.Tensor) else np.asarray(x), dtype=dtype, device=device)


def prompt_points(
    point_coords, point_labels, box, orig_hw: tuple[int, int], size: int, device, normalize_coords: bool = True
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Clicks (N, 2) / (B, N, 2) with labels and boxes (4,) / (B, 4) -> coords (B, N', 2) in model-input
    pixels and labels (B, N'); (None, None) when neither is given."""
    coords = labels = None
    if point_coords is not None:
        if point_labels is None:
            raise ValueError("point_labels must be given with point_coords")
        coords = as_tensor(point_coords, torch.float32, device)
        labels = as_tensor(point_labels, torch.int64, device)
        if coords.ndim == 2:
            coords, labels = coords[None], labels[None] if labels.ndim == 1 else labels
        if coords.ndim != 3 or coords.shape[-1] != 2:
            raise ValueError(f"point_coords must be (N, 2) or (B, N, 2), got {tuple(coords.shape)}")
        if labels.shape != coords.shape[:2]:
            raise ValueError(
                f"point_labels shape {tuple(labels.shape)} does not match point_coords {tuple(coords.shape)}"
            )
        coords = to_model_coords(coords, orig_hw, size, normalize_coords)
    if box is not None:
        boxes = as_tensor(box, torch.float32, device)
        if boxes.shape[-1] != 4 or boxes.ndim > 2:
            raise ValueError(f"box must be (4,) or (B, 4) xyxy, got {tuple(boxes.shape)}")
        corners = to_model_coords(boxes.reshape(-1, 2, 2), orig_hw, size, normalize_coords)
        corner_labels = torch.tensor([BOX_LABELS], device=device).expand(corners.shape[0], 2)
        if coords is None:
            coords, labels = corners, corner_labels
        else:
            b = max(coords.shape[0], corners.shape[0])
            if {coords.shape[0], corners.shape[0]} - {1, b}:
                raise ValueError(f"{corners.shape[0]} boxes but {coords.shape[0]} point sets")
            coords = torch.cat([corners.expand(b, -1, -1), coords.expand(b, -1, -1)], dim=1)
            labels = torch.cat([corner_labels.expand(b, -1), labels.expand(b, -1)], dim=1)
    return coords, labels


def one_object(points, labels, box) -> tuple:
    """Points, labels and a box of one object in any nesting -> (N, 2), (N,) and (4,) arrays (None stays None)."""
    return (
        None if points is None else np.asarray(points, dtype=np.float32).reshape(-1, 2),
        None if labels is None else np.asarray(labels).reshape(-1),
        None if box is None else np.asarray(box, dtype=np.float32).reshape(-1),
    )


def mask_prompt(mask, size: int, device) -> torch.Tensor:
    """A binary (H, W) mask at any size -> (1, 1, S, S) float {0, 1} at the model's input size."""
    m = torch.as_tensor(np.asarray(mask)).to(device)
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W), got {tuple(m.shape)}")
    m = m[None, None].float()
    if m.shape[-2:] != (size, size):
        m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        m = (m >= 0.5).float()
    return m


def mask_logits_prompt(mask_input, device) -> torch.Tensor | None:
    """Low-resolution logits from an earlier prediction, (1, h, w) or (B, 1, h, w) -> (B, 1, h, w)."""
    masks = as_tensor(mask_input, torch.float32, device)
    if masks is None:
        return None
    if masks.ndim == 3:
        masks = masks[None]
    if masks.ndim != 4 or masks.shape[1] != 1:
        raise ValueError(f"mask_input must be (1, H, W) or (B, 1, H, W), got {tuple(masks.shape)}")
    return masks
