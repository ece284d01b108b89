"""Tracker outputs as Ultralytics' video predictors report them: every object's mask at the frame's size, each
pixel given to at most one object (the highest logit), objects scored and those at or below `conf` dropped."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..video_tracker import ObjectResult
from .results import Results, make_results
from .sources import SourceImage


def exclusive_masks(logits: torch.Tensor) -> torch.Tensor:
    """(N, H, W) logits -> (N, H, W) bool masks where each pixel belongs to at most its highest-logit object."""
    if len(logits) == 0:
        return logits > 0
    winner = logits.argmax(dim=0)  # (H, W); ties go to the first object
    return (logits > 0) & (winner[None] == torch.arange(len(logits), device=logits.device)[:, None, None])


def tracked_results(item: SourceImage, objects: list[ObjectResult], scores: torch.Tensor, conf: float,
                    num_names: int) -> Results:
    """Results of tracked objects (class id = object id) with one score per object."""
    h, w = item.rgb.shape[:2]
    if objects:
        low_res = torch.stack([o.logits.float() for o in objects])  # (N, 1, 4s, 4s)
        logits = F.interpolate(low_res, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        masks = exclusive_masks(logits)
    else:
        masks = torch.zeros(0, h, w, dtype=torch.bool)
    ids = torch.tensor([o.obj_id for o in objects], dtype=torch.int64)
    return make_results(item.rgb, item.path, masks, scores, ids, conf, num_names)
