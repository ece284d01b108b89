"""Prompts for a whole video: which object, on which frame, with which clicks, box or mask.

A prompts file is a JSON list, one entry per object and frame (labels default to 1, obj_id to 1):
    [{"frame": 0, "obj_id": 1, "points": [[210, 350], [250, 300]], "labels": [1, 0]},
     {"frame": 10, "obj_id": 2, "box": [300, 100, 420, 260]}]
Coordinates are pixels of the video. Entries for the same object and frame are merged into one prompt.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROMPT_KEYS = {"frame", "obj_id", "points", "labels", "box"}


class PromptError(ValueError):
    """A prompt that cannot be used: malformed, outside the frame, or on a frame the video does not have."""


@dataclass(frozen=True)
class FramePrompt:
    """One object's prompt on one frame, in the video's pixels: clicks (label 1 object, 0 background), a box
    (x0, y0, x1, y1), both, or a binary mask (H, W) alone."""

    frame: int
    obj_id: int
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = None

    def tracker_kwargs(self) -> dict:
        """Keyword arguments of `VideoTracker.add_prompt`."""
        if self.mask is not None:
            return {"mask": self.mask}
        kw: dict = {"box": list(self.box)} if self.box is not None else {}
        if self.points:
            kw.update(points=[list(p) for p in self.points], labels=list(self.labels))
        return kw


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PromptError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _integer(value, what: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        raise PromptError(f"{what} must be an integer{f' >= {minimum}' if minimum is not None else ''}, got {value!r}")
    return value


def parse_prompt(entry, where: str = "prompt") -> FramePrompt:
    """A FramePrompt from a prompts-file entry (a dict), checked field by field."""
    if isinstance(entry, FramePrompt):
        return entry
    if not isinstance(entry, dict):
        raise PromptError(f"{where}: expected an object like {{\"frame\": 0, \"obj_id\": 1, \"points\": [[x, y]]}}, "
                          f"got {entry!r}")
    unknown = set(entry) - PROMPT_KEYS
    if unknown:
        raise PromptError(f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(PROMPT_KEYS)}")
    frame = _integer(entry.get("frame", 0), f"{where}: frame", 0)
    obj_id = _integer(entry.get("obj_id", 1), f"{where}: obj_id")
    points = entry.get("points", [])
    if not isinstance(points, list) or any(not isinstance(p, list) or len(p) != 2 for p in points):
        raise PromptError(f"{where}: points must be a list of [x, y] pairs, got {points!r}")
    points = tuple((_number(x, f"{where}: point x"), _number(y, f"{where}: point y")) for x, y in points)
    labels = entry.get("labels", [1] * len(points))
    if not isinstance(labels, list) or len(labels) != len(points):
        raise PromptError(f"{where}: labels must be a list with one label per point ({len(points)}), got {labels!r}")
    if any(lab not in (0, 1) or isinstance(lab, bool) for lab in labels):
        raise PromptError(f"{where}: labels must be 1 (object) or 0 (background), got {labels!r}")
    box = entry.get("box")
    if box is not None:
        if not isinstance(box, list) or len(box) != 4:
            raise PromptError(f"{where}: box must be [x0, y0, x1, y1], got {box!r}")
        box = tuple(_number(v, f"{where}: box") for v in box)
        if not (box[0] < box[2] and box[1] < box[3]):
            raise PromptError(f"{where}: box must have x0 < x1 and y0 < y1, got {list(box)}")
    if not points and box is None:
        raise PromptError(f"{where}: give points (with labels) and/or a box")
    return FramePrompt(frame, obj_id, points, tuple(int(v) for v in labels), box)


def load_prompts(path: str | Path) -> list[FramePrompt]:
    """Read and check a prompts file (see the module docstring for the format)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PromptError(f"no such prompts file: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PromptError(f"{path}: not a JSON prompts file ({exc})") from None
    if not isinstance(data, list) or not data:
        raise PromptError(f"{path}: expected a non-empty JSON list of prompts")
    return [parse_prompt(entry, f"{path}: prompt {i}") for i, entry in enumerate(data)]


def check_prompts(prompts: Iterable[FramePrompt], height: int, width: int, num_frames: int | None = None) -> None:
    """Prompts must lie inside a height x width frame and (when the length is known) inside the video."""
    for p in prompts:
        where = f"prompt for object {p.obj_id} on frame {p.frame}"
        if num_frames is not None and p.frame >= num_frames:
            raise PromptError(f"{where}: the video has {num_frames} frames (0..{num_frames - 1})")
        coords = list(p.points) + ([p.box[:2], p.box[2:]] if p.box is not None else [])
        for x, y in coords:
            if not (0 <= x <= width and 0 <= y <= height):
                raise PromptError(f"{where}: ({x:g}, {y:g}) is outside the {width}x{height} frame")
        if p.mask is not None and np.shape(p.mask) != (height, width):
            raise PromptError(f"{where}: mask is {np.shape(p.mask)}, frames are ({height}, {width})")


def merge_by_frame(prompts: Iterable[FramePrompt]) -> dict[int, list[FramePrompt]]:
    """Frame index -> one prompt per object, in first-seen order; clicks of repeated entries accumulate."""
    merged: dict[tuple[int, int], FramePrompt] = {}
    for p in prompts:
        key = (p.frame, p.obj_id)
        old = merged.get(key)
        if old is None:
            merged[key] = p
            continue
        where = f"object {p.obj_id} on frame {p.frame}"
        if old.mask is not None or p.mask is not None:
            raise PromptError(f"{where}: a mask prompt cannot be combined with other prompts")
        if old.box is not None and p.box is not None:
            raise PromptError(f"{where}: one box per object and frame")
        merged[key] = FramePrompt(p.frame, p.obj_id, old.points + p.points, old.labels + p.labels,
                                  old.box if old.box is not None else p.box)
    by_frame: dict[int, list[FramePrompt]] = {}
    for (frame, _), p in merged.items():
        by_frame.setdefault(frame, []).append(p)
    return by_frame
