"""Tracked masks as JSON lines: one line per frame, each object's mask as COCO RLE (pycocotools).

    {"frame": 0, "objects": [{"obj_id": 1, "segmentation": {"size": [H, W], "counts": "..."},
                              "iou": 0.91, "object_score_logit": 4.2, "present": true}, ...]}

`iou` is the decoder's predicted IoU of the mask; an object is listed on every frame from its first prompt on,
with an empty mask where it is not present. `pycocotools.mask.decode` (or `mask_ops.decode_rle`) reads a mask.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .mask_ops import encode_rle
from .video_tracker import TrackResult


def frame_record(result: TrackResult) -> dict:
    """The JSON-ready record of one tracked frame."""
    rles = encode_rle(np.stack([o.mask for o in result.objects])) if result.objects else []
    return {"frame": result.frame_idx, "objects": [
        {"obj_id": o.obj_id, "segmentation": rle, "iou": o.iou, "object_score_logit": o.object_score_logit,
         "present": o.present}
        for o, rle in zip(result.objects, rles)
    ]}


class MaskLinesWriter:
    """Appends one line per tracked frame, flushed as it goes (a camera run stopped at any time leaves whole lines)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = open(self.path, "w", encoding="utf-8")

    def write(self, result: TrackResult) -> None:
        self._file.write(json.dumps(frame_record(result), separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> MaskLinesWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_mask_lines(path: str | Path) -> Iterator[dict]:
    """The records of a masks file, in frame order, one at a time."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
