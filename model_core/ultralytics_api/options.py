"""Ultralytics-style settings (`overrides=dict(...)` and predict keyword arguments), checked into one frozen config."""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

log = logging.getLogger(__name__)

# Accepted for compatibility and ignored: SAM always predicts in segment mode, one image at a time, and its masks
# are always at the original image's resolution (Ultralytics forces retina_masks for SAM too).
IGNORED = ("task", "mode", "batch", "retina_masks", "save", "show")

# Ultralytics' segment-everything parameters (its Predictor.generate), for a prompt-less call.
EVERYTHING_KEYS = (
    "points_stride", "points_batch_size", "conf_thres", "stability_score_thresh", "stability_score_offset",
    "crop_n_layers", "crop_overlap_ratio", "crop_downscale_factor", "crop_nms_thresh", "min_mask_region_area",
)


@dataclass(frozen=True)
class PredictOptions:
    """What a prediction runs with. imgsz: the model's square input side (None: the model's own, 1024 for the
    released checkpoints); conf: masks scoring at or below it are dropped; iou: segment-everything NMS threshold."""

    model: Any = None  # a model name, a checkpoint path, or a built SAM2Model
    conf: float = 0.25
    iou: float = 0.7
    imgsz: int | None = None
    device: str | None = None
    half: bool = False
    verbose: bool = False
    everything: tuple[tuple[str, Any], ...] = ()  # EVERYTHING_KEYS given by the caller

    def updated(self, kwargs: dict) -> "PredictOptions":
        """A copy with Ultralytics keyword arguments applied (unknown names are refused)."""
        known = {f.name for f in fields(self)} - {"everything"}
        changes, everything = {}, dict(self.everything)
        for key, value in kwargs.items():
            if key in known:
                changes[key] = value
            elif key in EVERYTHING_KEYS:
                everything[key] = value
            elif key not in IGNORED:
                accepted = ", ".join(sorted(known | set(EVERYTHING_KEYS) | set(IGNORED)))
                raise ValueError(f"unknown argument {key!r}; accepted: {accepted}")
        out = replace(self, **changes, everything=tuple(sorted(everything.items())))
        out.check()
        return out

    def check(self) -> None:
        if not 0.0 <= float(self.conf) <= 1.0:
            raise ValueError(f"conf must be in [0, 1], got {self.conf}")
        if not 0.0 <= float(self.iou) <= 1.0:
            raise ValueError(f"iou must be in [0, 1], got {self.iou}")
        if self.imgsz is not None:
            size = self.imgsz
            if isinstance(size, (list, tuple)):
                if len(size) != 2 or size[0] != size[1]:
                    raise ValueError(f"SAM 2 takes a square input: imgsz must be an int or [n, n], got {size}")
                size = size[0]
            if not isinstance(size, int) or isinstance(size, bool) or size < 32:
                raise ValueError(f"imgsz must be an int >= 32, got {self.imgsz!r}")

    @property
    def image_size(self) -> int | None:
        """imgsz as the model's input side: a multiple of 32 (rounded up with a warning, as Ultralytics does)."""
        if self.imgsz is None:
            return None
        size = self.imgsz[0] if isinstance(self.imgsz, (list, tuple)) else self.imgsz
        rounded = -(-size // 32) * 32
        if rounded != size:
            log.warning("imgsz=%d is not a multiple of 32: using %d", size, rounded)
        return rounded

    def dtype_on(self, device: torch.device) -> torch.dtype:
        """fp16 autocast for half=True on a GPU; fp32 otherwise (as Ultralytics, which refuses fp16 on CPUs)."""
        return torch.float16 if self.half and device.type == "cuda" else torch.float32


def from_overrides(overrides: dict | None, **defaults) -> PredictOptions:
    """`overrides=dict(...)` of a predictor's constructor, on top of `defaults`."""
    if overrides is not None and not isinstance(overrides, dict):
        raise ValueError(f"overrides must be a dict, got {type(overrides).__name__}")
    return PredictOptions(**defaults).updated(dict(overrides or {}))
