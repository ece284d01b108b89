"""VideoTracker: the streaming core. Frames arrive one at a time; prompts may come at any moment.

Semantics follow Meta's 12/2024 video predictor (each object tracked as if alone), but objects whose
memories line up share one batched pass, and memory is bounded: conditioning (prompted) frames plus
the last num_maskmem frames' memories and the last 16 frames' object pointers. No pixels are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby

import numpy as np
import torch
import torch.nn.functional as F

from .memory_bank import MemorySelection, ObjectTrack, group_by_layout, select_memories
from .modeling.sam2_model import SAM2Model
from .precision import autocast
from .prompt_inputs import LOW_RES_CLAMP, mask_prompt, one_object, prompt_points
from .tracking_step import (
    FrameFeatures,
    HeadOutput,
    frame_features,
    prompt_memory,
    segment_prompted,
    track_objects,
)
from .transforms import as_rgb_uint8, preprocess, to_model_coords

COND, NON_COND = "cond", "non_cond"  # the two kinds of memory entry (ObjectTrack's two dicts)


@dataclass
class Prompt:
    """Clicks and/or a box (as corner points labelled 2, 3), or a binary mask, in model-input pixels.

    pixels=True: the coords are still in pixels of the frame the prompt waits for, whose size was not known
    when it was given (images mode, or before the first frame); they are scaled when that frame arrives.
    """

    coords: torch.Tensor | None = None  # (N, 2)
    labels: torch.Tensor | None = None  # (N,)
    mask: torch.Tensor | None = None  # (1, 1, S, S) binary float
    update_memory: bool = True
    pixels: bool = False

    @property
    def num_points(self) -> int:
        return 0 if self.coords is None else int(self.coords.shape[0])


@dataclass
class ObjectResult:
    obj_id: int
    mask: np.ndarray  # (H, W) bool at the video's resolution
    logits: torch.Tensor  # (1, 4s, 4s) float32 low-resolution logits
    iou: float  # predicted IoU of the mask
    object_score_logit: float  # > 0 means the object is present
    present: bool

    @property
    def score(self) -> float:
        """Old name of `iou` (the wire format keeps it), for callers written against it."""
        return self.iou

    @property
    def object_score(self) -> float:
        """Old name of `object_score_logit`."""
        return self.object_score_logit


@dataclass
class TrackResult:
    frame_idx: int
    objects: list[ObjectResult]

    def by_id(self) -> dict[int, ObjectResult]:
        return {o.obj_id: o for o in self.objects}


@dataclass
class StepDelta:
    """What one step changed: entries written and deleted (obj_id, kind, frame), fields dropped from kept
    entries (obj_id, kind, frame, field), so that a store writes only new bytes. kind: COND or NON_COND."""

    put: list[tuple[int, str, int]] = field(default_factory=list)
    delete: list[tuple[int, str, int]] = field(default_factory=list)
    drop: list[tuple[int, str, int, str]] = field(default_factory=list)


@dataclass
class TrackerState:
    """Everything a session needs to continue; serialisable with `model_core.state_codec`."""

    height: int  # the frames' size; in images mode the latest image's (each image has its own)
    width: int
    num_frames: int | None = None  # expected length (None: an open-ended stream)
    mode: str = "video"  # "video", or "images" for independent images sharing memory
    max_obj_num: int | None = None
    frame_idx: int = 0  # index the next frame will get
    objects: dict[int, ObjectTrack] = field(default_factory=dict)
    pending: dict[int, Prompt] = field(default_factory=dict)  # prompts for the next frame
    frame_points: dict[int, tuple[int, torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    last_features: FrameFeatures | None = None  # the latest frame's features (not serialised)
    last_delta: StepDelta = field(default_factory=StepDelta)

    @property
    def obj_ids(self) -> list[int]:
        return list(self.objects)


class VideoTracker:
    """Tracks every prompted object through a stream of frames with SAM 2's memory."""

    def __init__(self, model: SAM2Model, dtype: torch.dtype = torch.float32, fill_hole_area: int = 0,
                 resize: str = "bicubic") -> None:
        self.model = model
        self.resize = resize  # the reference video loader's filter; "area": OpenCV on the host
        self.dtype = dtype
        self.fill_hole_area = fill_hole_area

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def cfg(self):
        return self.model.cfg

    # ---- state and prompts ----------------------------------------------------------------

    def new_state(
        self, height: int, width: int, num_frames: int | None = None, mode: str = "video", max_obj_num: int | None = None
    ) -> TrackerState:
        """A session for frames of height x width (0 x 0: the size is taken from the first frame).

        mode="images": independent images sharing memory, each of its own size (height x width is the latest's).
        """
        if height < 0 or width < 0 or (height == 0) != (width == 0):
            raise ValueError("height and width must be positive (or both 0 until the first frame)")
        if mode not in ("video", "images"):
            raise ValueError("mode must be 'video' or 'images'")
        return TrackerState(height, width, num_frames, mode, max_obj_num)

    def make_prompt(
        self, state: TrackerState, points=None, labels=None, box=None, mask=None, normalize_coords: bool = True,
        update_memory: bool = True, defer: bool = False,
    ) -> Prompt:
        """Validate user prompts (pixels of the video) and bring them to model-input coordinates.

        defer: the prompt is for a frame whose size is not known yet; pixel coords are kept until it arrives.
        """
        size, dev = self.cfg.image_size, self.device
        if mask is not None:
            if points is not None or box is not None:
                raise ValueError("give either a mask or points/box, not both")
            return Prompt(mask=mask_prompt(mask, size, dev), update_memory=update_memory)
        if (points is None) != (labels is None):
            raise ValueError("points and labels must be given together")
        if points is None and box is None:
            raise ValueError("give points with labels, a box, or a mask")
        points, labels, box = one_object(points, labels, box)
        if defer and normalize_coords:  # corners and clicks as they are (scale 1), scaled by `_scale_pending`
            coords, labs = prompt_points(points, labels, box, (1, 1), 1, dev, normalize_coords=False)
            return Prompt(coords[0], labs[0], update_memory=update_memory, pixels=True)
        coords, labs = prompt_points(points, labels, box, (state.height, state.width), size, dev, normalize_coords)
        return Prompt(coords[0], labs[0], update_memory=update_memory)

    @staticmethod
    def next_size_unknown(state: TrackerState) -> bool:
        """Whether the next frame's size is unknown until it arrives: always for images, else before the first."""
        return state.mode == "images" or state.height == 0

    def add_prompt(
        self, state: TrackerState, obj_id: int, points=None, labels=None, box=None, mask=None,
        frame: str = "next", normalize_coords: bool = True, update_memory: bool = True,
    ) -> ObjectResult | None:
        """Prompt an object on the next frame (applied when it arrives) or refine the current one now.

        frame="next": clicks for the same object accumulate until the frame arrives. frame="current":
        the latest tracked frame; returns the object's corrected mask. New objects may join at any time.
        """
        obj_id = int(obj_id)
        if obj_id not in state.objects and state.max_obj_num is not None and len(state.objects) >= state.max_obj_num:
            raise ValueError(f"at most {state.max_obj_num} objects per session")
        if frame not in ("next", "current"):
            raise ValueError("frame must be 'next' or 'current'")
        defer = frame == "next" and self.next_size_unknown(state)
        prompt = self.make_prompt(state, points, labels, box, mask, normalize_coords, update_memory, defer)
        if frame == "next":
            old = state.pending.get(obj_id)
            if old is not None and old.coords is not None and prompt.coords is not None and (prompt.labels < 2).all():
                if old.pixels != prompt.pixels:
                    raise ValueError("clicks in pixels and in [0, 1] cannot be mixed for one object on one frame")
                prompt = Prompt(torch.cat([old.coords, prompt.coords]), torch.cat([old.labels, prompt.labels]),
                                update_memory=prompt.update_memory, pixels=prompt.pixels)
            state.pending[obj_id] = prompt
            state.objects.setdefault(obj_id, ObjectTrack(obj_id))
            return None
        if state.frame_idx == 0 or state.last_features is None:
            raise ValueError("no current frame to refine: send a frame first (or prompt frame='next')")
        with torch.inference_mode(), autocast(self.device, self.dtype):
            return self._refine_current(state, obj_id, prompt)

    def remove_object(self, state: TrackerState, obj_id: int) -> None:
        """Forget an object and its memory; the others are unaffected."""
        track = state.objects.pop(int(obj_id), None)
        if track is None:
            raise KeyError(f"unknown object id {obj_id}")
        state.pending.pop(int(obj_id), None)
        state.frame_points.pop(int(obj_id), None)
        state.last_delta.delete += [(track.obj_id, k, t) for k, d in ((COND, track.cond), (NON_COND, track.non_cond))
                                    for t in d]

    def reset(self, state: TrackerState) -> None:
        """Drop all objects, prompts and memories; the frame counter continues."""
        for obj_id in list(state.objects):
            self.remove_object(state, obj_id)
        state.pending.clear()

    # ---- frames ---------------------------------------------------------------------------

    def track(self, state: TrackerState, frame) -> TrackResult:
        """Segment every object on the next frame: HWC RGB uint8 (at the session's size in video mode, any size in
        images mode) or a preprocessed (3, S, S) tensor (the caller sets state.height/width when they change)."""
        return self.track_batch([state], [frame])[0]

    def track_batch(self, states: Sequence[TrackerState], frames: Sequence) -> list[TrackResult]:
        """`track` for several independent sessions at once: their frames in one encoder call, and their
        objects whose memory layouts agree in one tracking step. Each result is what `track` gives alone."""
        if len({id(s) for s in states}) != len(states):
            raise ValueError("a session can take one frame per batch")
        inputs = [self._input(state, frame) for state, frame in zip(states, frames)]
        for state, (_, hw) in zip(states, inputs):
            if hw is None and state.height == 0:
                raise ValueError("the frame's size is unknown: set state.height and state.width before tracking "
                                 "a preprocessed frame")
        for state, (_, hw) in zip(states, inputs):  # checked: from here on states change
            if hw is not None:  # images mode (each image its own size), or a session's first frame
                state.height, state.width = hw
            self._scale_pending(state)
        x = torch.cat([t for t, _ in inputs])  # (N, 3, S, S)
        with torch.inference_mode(), autocast(self.device, self.dtype):
            feats = frame_features(self.model, x)
            return self._track_batch(list(states), [feats.row(i) for i in range(len(states))])

    def _input(self, state: TrackerState, frame) -> tuple[torch.Tensor, tuple[int, int] | None]:
        """(1, 3, S, S) model input of a frame, and the size the session takes from it (None: no change)."""
        if isinstance(frame, torch.Tensor) and frame.ndim == 3 and frame.shape[0] == 3:
            return frame[None].to(self.device, torch.float32), None
        image = as_rgb_uint8(frame)
        hw = image.shape[:2]
        if not self.next_size_unknown(state) and hw != (state.height, state.width):
            raise ValueError(f"frame is {image.shape[1]}x{image.shape[0]}, session is {state.width}x{state.height} "
                             "(only mode='images' takes images of different sizes)")
        return preprocess(image, self.cfg.image_size, self.device, self.resize)[None], hw

    def _scale_pending(self, state: TrackerState) -> None:
        """Prompts given in pixels of a frame of unknown size, scaled now that it has arrived."""
        for obj_id, p in state.pending.items():
            if p.pixels:
                coords = to_model_coords(p.coords, (state.height, state.width), self.cfg.image_size)
                state.pending[obj_id] = Prompt(coords, p.labels, p.mask, p.update_memory)

    def _track_batch(self, states: list[TrackerState], feats: list[FrameFeatures]) -> list[TrackResult]:
        outputs: list[dict[int, HeadOutput]] = [{} for _ in states]
        waiting = []  # ((session k, track), selection) of every object tracked from memory
        for k, state in enumerate(states):
            f = state.frame_idx
            state.last_delta = StepDelta()
            for obj_id, prompt in list(state.pending.items()):
                outputs[k][obj_id] = self._start_track(state, feats[k], f, obj_id, prompt)
            state.pending.clear()
            waiting += [((k, track), sel) for track, sel in self.memory_selections(state, f, exclude=outputs[k])]

        for remember in (True, False):  # sessions of independent images add no memory: never mixed with videos
            mine = [item for item in waiting if (states[item[0][0]].mode == "video") == remember]
            for members, sels in group_by_layout(mine):
                sessions = [k for k, _ in members]  # consecutive runs of one session share its frame's row
                rows = FrameFeatures.cat([feats[k].expand(sum(1 for _ in run)) for k, run in groupby(sessions)])
                step = track_objects(self.model, rows, sels, self.fill_hole_area, remember)
                for i, (k, track) in enumerate(members):
                    outputs[k][track.obj_id] = step.heads.row(i)
                    if remember:
                        f = states[k].frame_idx
                        track.non_cond[f] = step.memory_entry(i)
                        states[k].last_delta.put.append((track.obj_id, NON_COND, f))

        results = []
        for k, state in enumerate(states):
            f = state.frame_idx
            self._evict(state, f)
            state.frame_idx = f + 1
            state.last_features = feats[k]
            out = outputs[k]
            results.append(TrackResult(f, [self._result(state, obj_id, out[obj_id]) for obj_id in state.objects
                                           if obj_id in out]))
        return results

    def memory_selections(self, state: TrackerState, f: int, exclude=()) -> list[tuple[ObjectTrack, MemorySelection]]:
        """Each tracked object's memories for frame f (objects in `exclude` or never prompted left out)."""
        out = []
        for track in state.objects.values():
            if track.obj_id in exclude or not track.cond:
                continue
            sel = select_memories(track, f, False, state.num_frames, self.cfg)
            if state.mode == "images":  # unrelated images have no time between them: every pointer is "1 back"
                sel = MemorySelection(sel.spatial, [(1, e) for _, e in sel.pointers], sel.max_ptrs)
            out.append((track, sel))
        return out

    # ---- prompts on a frame ---------------------------------------------------------------

    def _segment_prompted(
        self, feats: FrameFeatures, prompt: Prompt, sel: MemorySelection | None, prev_logits: torch.Tensor | None
    ) -> HeadOutput:
        coords = None if prompt.coords is None else prompt.coords[None]
        labels = None if prompt.labels is None else prompt.labels[None]
        sels = None if sel is None else [sel]
        return segment_prompted(self.model, feats, sels, coords, labels, prompt.mask, prev_logits, self.fill_hole_area)

    def _remember_prompt(self, state: TrackerState, feats: FrameFeatures, f: int, track: ObjectTrack, kind: str,
                         out: HeadOutput) -> None:
        maskmem = prompt_memory(self.model, feats, out.low_res, out.object_score_logit)[0]
        (track.cond if kind == COND else track.non_cond)[f] = out.memory_entry(0, maskmem)
        state.last_delta.put.append((track.obj_id, kind, f))

    def _start_track(self, state: TrackerState, feats: FrameFeatures, f: int, obj_id: int, prompt: Prompt) -> HeadOutput:
        """A prompt on a frame the object has not been tracked on: a conditioning frame, without memory."""
        track = state.objects.setdefault(obj_id, ObjectTrack(obj_id))
        out = self._segment_prompted(feats, prompt, None, None)
        if prompt.coords is not None:
            state.frame_points[obj_id] = (f, prompt.coords, prompt.labels)
        else:
            state.frame_points.pop(obj_id, None)
        if prompt.update_memory:
            self._remember_prompt(state, feats, f, track, COND, out)
        return out

    def _refine_current(self, state: TrackerState, obj_id: int, prompt: Prompt) -> ObjectResult:
        f = state.frame_idx - 1
        feats = state.last_features
        track = state.objects.get(obj_id)
        if track is None or track.entry(f) is None:
            out = self._start_track(state, feats, f, obj_id, prompt)
            return self._result(state, obj_id, out)
        if prompt.coords is not None:
            prev = state.frame_points.get(obj_id)
            if prev is not None and prev[0] == f and (prompt.labels < 2).all():
                prompt = Prompt(torch.cat([prev[1], prompt.coords]), torch.cat([prev[2], prompt.labels]),
                                update_memory=prompt.update_memory)
        kind = COND if f in track.cond else NON_COND
        entry = track.entry(f)
        prev_logits = None
        if entry.low_res is not None and prompt.mask is None:
            prev_logits = entry.low_res[None].clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)
        # refining a prompted frame: still no memory, as on its first click; a tracked frame: the memory before it
        sel = None if kind == COND else select_memories(track, f, False, state.num_frames, self.cfg)
        out = self._segment_prompted(feats, prompt, sel, prev_logits)
        if prompt.coords is not None:
            state.frame_points[obj_id] = (f, prompt.coords, prompt.labels)
        if prompt.update_memory:
            self._remember_prompt(state, feats, f, track, kind, out)
        return self._result(state, obj_id, out)

    def _evict(self, state: TrackerState, f: int) -> None:
        """Keep what frame f (corrections) and f + 1 can read: 16 frames of pointers, 7 of memories."""
        keep_ptr_from = f - (self.cfg.max_obj_ptrs_in_encoder - 1)
        keep_mem_from = f - (self.cfg.num_maskmem - 1)
        for track in state.objects.values():
            for t in [t for t in track.non_cond if t < keep_ptr_from]:
                del track.non_cond[t]
                state.last_delta.delete.append((track.obj_id, NON_COND, t))
            for t, e in track.non_cond.items():
                if t < keep_mem_from and e.maskmem is not None:
                    e.maskmem = None
                    state.last_delta.drop.append((track.obj_id, NON_COND, t, "maskmem"))
                if t < f and e.low_res is not None:
                    e.low_res = None
                    state.last_delta.drop.append((track.obj_id, NON_COND, t, "low_res"))
            for t, e in track.cond.items():
                if t < f and e.low_res is not None:
                    e.low_res = None
                    state.last_delta.drop.append((track.obj_id, COND, t, "low_res"))

    # ---- helpers --------------------------------------------------------------------------

    def _result(self, state: TrackerState, obj_id: int, out: HeadOutput) -> ObjectResult:
        logits = out.low_res.float()
        video = F.interpolate(logits, size=(state.height, state.width), mode="bilinear", align_corners=False)
        presence = float(out.object_score_logit.reshape(-1)[0])
        return ObjectResult(obj_id, (video[0, 0] > 0).cpu().numpy(), logits[0], float(out.iou.reshape(-1)[0]),
                            presence, presence > 0)
