"""track_video: a video file, frame folder, camera or URL tracked end to end with the streaming VideoTracker.

Frames are read one at a time and handed back with their masks, so memory stays bounded whatever the
length; a camera has none. Writers for the results are in `mask_lines.py` and `video_writers.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, islice

import numpy as np

from .automatic_mask_generator import AutomaticMaskGenerator
from .track_prompts import FramePrompt, PromptError, check_prompts, merge_by_frame, parse_prompt
from .transforms import preprocess
from .video_io import FrameStream, VideoSourceError, open_stream
from .video_tracker import TrackResult, VideoTracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EverythingParams:
    """Seeding objects from "segment everything" on the first frame: the generator's settings, and how many
    of its masks (best predicted IoU first) become objects."""

    points_per_side: int = 32
    pred_iou_thresh: float = 0.8
    stability_score_thresh: float = 0.95
    box_nms_thresh: float = 0.7
    min_mask_region_area: int = 0
    max_objects: int | None = None


@dataclass
class TrackedFrame:
    """One frame of the video and its objects' masks."""

    frame_idx: int
    image: np.ndarray  # (H, W, 3) RGB uint8
    result: TrackResult


def everything_prompts(tracker: VideoTracker, image: np.ndarray, params: EverythingParams,
                       first_id: int = 1) -> list[FramePrompt]:
    """One mask prompt on frame 0 per automatic mask of `image`, with object ids first_id, first_id + 1, ..."""
    generator = AutomaticMaskGenerator(
        tracker.model, points_per_side=params.points_per_side, pred_iou_thresh=params.pred_iou_thresh,
        stability_score_thresh=params.stability_score_thresh, box_nms_thresh=params.box_nms_thresh,
        min_mask_region_area=params.min_mask_region_area,
        output_mode="binary_mask", dtype=tracker.dtype,
    )
    records = sorted(generator.generate(image), key=lambda r: -r["predicted_iou"])[: params.max_objects]
    return [FramePrompt(0, first_id + i, mask=r["segmentation"]) for i, r in enumerate(records)]


def _model_input(tracker: VideoTracker, stream: FrameStream, image: np.ndarray):
    """What the tracker takes for a frame: a video file's frame scaled in the decoder as the reference's reader
    does (as the VideoPredictor reads it), where the stream can and the tracker keeps the reference's filter;
    otherwise the frame itself, which the tracker resizes."""
    if tracker.resize != "bicubic":
        return image
    scaled = stream.model_input(tracker.cfg.image_size)
    return image if scaled is None else preprocess(scaled, tracker.cfg.image_size, tracker.device)


def track_video(
    tracker: VideoTracker,
    source,
    prompts: Iterable[FramePrompt | dict] = (),
    everything: EverythingParams | None = None,
    max_frames: int | None = None,
) -> Iterator[TrackedFrame]:
    """Track the prompted objects (and, with `everything`, one object per automatic mask of the first frame)
    through `source`: anything `open_stream` takes. Yields every frame with its masks, in order.

    Prompts on frame F are given to the tracker just before frame F. Raises PromptError for unusable
    prompts and VideoSourceError for a source that cannot be read; a source this call opened, it closes.
    """
    prompts = [parse_prompt(p, f"prompt {i}") for i, p in enumerate(prompts)]
    owned = not isinstance(source, FrameStream)
    stream = open_stream(source)
    try:
        frames = iter(stream)
        first = next(frames, None)
        if first is None:
            raise VideoSourceError(f"{stream.name}: the video has no frames")
        height, width = first.shape[:2]
        check_prompts(prompts, height, width, stream.num_frames if stream.exact_length else None)
        if everything is not None:
            first_id = max((p.obj_id for p in prompts), default=0) + 1
            seeds = everything_prompts(tracker, first, everything, first_id)
            if not seeds and not prompts:
                raise PromptError("segment everything found no masks on the first frame: nothing to track "
                                  "(lower pred_iou_thresh or stability_score_thresh)")
            prompts += seeds
        if not prompts:
            raise PromptError("nothing to track: give points, a box or a mask (or ask for everything)")
        plan = merge_by_frame(prompts)
        state = tracker.new_state(height, width, num_frames=stream.num_frames)
        n = 0
        for f, image in enumerate(islice(chain([first], frames), max_frames)):
            if state.num_frames is not None and f >= state.num_frames:
                log.warning("%s has more frames than its container says (%d); tracking on as a stream",
                            stream.name, state.num_frames)
                state.num_frames = None
            for p in plan.pop(f, []):
                tracker.add_prompt(state, p.obj_id, **p.tracker_kwargs())
            yield TrackedFrame(f, image, tracker.track(state, _model_input(tracker, stream, image)))
            n = f + 1
        late = sorted(f for f in plan if max_frames is None or f < max_frames)
        if late:
            raise PromptError(f"the video ended after {n} frames, before the prompts on frame(s) {late}")
    finally:
        if owned:
            stream.close()
