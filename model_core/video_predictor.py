"""VideoPredictor: Meta's offline video API (init_state, add_new_points_or_box, propagate_in_video, ...).

Same argument names and return values as sam2's SAM2VideoPredictor, so user code ports by changing
the import. Built on the same steps as the streaming VideoTracker; frames are decoded lazily and
objects with matching memory layouts are tracked in one batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .memory_bank import MemoryEntry, ObjectTrack, group_by_layout, select_memories
from .modeling.sam2_model import SAM2Model
from .precision import autocast
from .prompt_inputs import LOW_RES_CLAMP, mask_prompt, one_object, prompt_points
from .tracking_step import (
    NO_OBJ_SCORE,
    FrameFeatures,
    frame_features,
    prompt_memory,
    segment_prompted,
    track_objects,
)
from .transforms import preprocess
from .video_io import FrameSource, open_video
from .video_tracker import COND, NON_COND


@dataclass
class _ObjectState:
    track: ObjectTrack
    points: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # frame -> (1,N,2), (1,N)
    masks: dict[int, torch.Tensor] = field(default_factory=dict)
    temp: dict[str, dict[int, MemoryEntry]] = field(default_factory=lambda: {COND: {}, NON_COND: {}})
    tracked: dict[int, bool] = field(default_factory=dict)  # frame -> tracked in reverse


@dataclass
class VideoState:
    """The inference state of one video (Meta keeps a dict; this holds the same information)."""

    frames: FrameSource
    video_height: int
    video_width: int
    num_frames: int
    objects: dict[int, _ObjectState] = field(default_factory=dict)
    cached: tuple[int, FrameFeatures] | None = None

    @property
    def obj_ids(self) -> list[int]:
        return list(self.objects)


class VideoPredictor:
    """Offline video segmentation with Meta's API on our model."""

    def __init__(self, model: SAM2Model, dtype: torch.dtype = torch.float32, fill_hole_area: int = 0,
                 progress: bool = True, resize: str = "reference") -> None:
        self.model = model
        # "reference": the reference's loader for each source (video files scaled in the decoder as decord does,
        # where PyAV is installed; image frames PIL-like bicubic); or one filter for all: see transforms.preprocess
        self.resize = resize
        self.dtype = dtype
        self.progress = progress
        self.fill_hole_area = fill_hole_area

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def image_size(self) -> int:
        return self.model.image_size

    # ---- state ----------------------------------------------------------------------------

    @torch.inference_mode()
    def init_state(self, video, offload_video_to_cpu: bool = False, offload_state_to_cpu: bool = False,
                   async_loading_frames: bool = False) -> VideoState:
        """Open a video (mp4 path, JPEG folder, list of frames); frames are read when needed."""
        frames = open_video(video)
        h, w = frames.hw
        return VideoState(frames, h, w, len(frames))

    def frame_tensor(self, state: VideoState, frame_idx: int) -> torch.Tensor:
        """The preprocessed (3, S, S) input for a frame."""
        if self.resize == "reference":
            scaled = state.frames.model_input(frame_idx, self.image_size)
            if scaled is not None:
                return preprocess(scaled, self.image_size, self.device)  # already S x S: normalised only
            return preprocess(state.frames[frame_idx], self.image_size, self.device, "bicubic")
        return preprocess(state.frames[frame_idx], self.image_size, self.device, self.resize)

    def _features(self, state: VideoState, frame_idx: int) -> FrameFeatures:
        if state.cached is None or state.cached[0] != frame_idx:
            x = self.frame_tensor(state, frame_idx)[None].to(self.device)
            state.cached = (frame_idx, frame_features(self.model, x))
        return state.cached[1]

    def _obj(self, state: VideoState, obj_id: int) -> _ObjectState:
        obj_id = int(obj_id)
        if obj_id not in state.objects:
            state.objects[obj_id] = _ObjectState(ObjectTrack(obj_id))
        return state.objects[obj_id]

    # ---- prompts --------------------------------------------------------------------------

    @torch.inference_mode()
    def add_new_points_or_box(self, inference_state: VideoState, frame_idx: int, obj_id: int, points=None,
                              labels=None, clear_old_points: bool = True, normalize_coords: bool = True, box=None):
        """Clicks and/or a box for one object on one frame -> (frame_idx, obj_ids, masks (O, 1, H, W) logits)."""
        state = inference_state
        if (points is not None) != (labels is not None):
            raise ValueError("give points and labels together (one label per point)")
        if points is None and box is None:
            raise ValueError("give points with labels, or a box, or both")
        if box is not None and not clear_old_points:
            raise ValueError("a box must come first: use clear_old_points=True when giving a box")
        self._check_frame(state, frame_idx)
        obj = self._obj(state, obj_id)
        hw = (state.video_height, state.video_width)
        points, labels, box = one_object(points, labels, box)
        coords, labs = prompt_points(points, labels, box, hw, self.image_size, self.device, normalize_coords)
        if not clear_old_points and frame_idx in obj.points:
            old_c, old_l = obj.points[frame_idx]
            coords, labs = torch.cat([old_c, coords], dim=1), torch.cat([old_l, labs], dim=1)
        obj.points[frame_idx] = (coords, labs)
        obj.masks.pop(frame_idx, None)

        is_init = frame_idx not in obj.tracked
        reverse = False if is_init else obj.tracked[frame_idx]
        key = COND if is_init else NON_COND
        prev = obj.temp[key].get(frame_idx) or obj.track.entry(frame_idx)
        prev_logits = None
        if prev is not None and prev.low_res is not None:
            prev_logits = prev.low_res[None].to(self.device).clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)
        sels = None if is_init else [select_memories(obj.track, frame_idx, reverse, state.num_frames, self.model.cfg)]
        with autocast(self.device, self.dtype):
            feats = self._features(state, frame_idx)
            out = segment_prompted(self.model, feats, sels, coords, labs, None, prev_logits, self.fill_hole_area)
        obj.temp[key][frame_idx] = out.memory_entry(0, None)
        return frame_idx, state.obj_ids, self._frame_masks(state, frame_idx, key)

    def add_new_points(self, *args, **kwargs):
        """Deprecated alias of add_new_points_or_box (as in Meta's API)."""
        return self.add_new_points_or_box(*args, **kwargs)

    @torch.inference_mode()
    def add_new_mask(self, inference_state: VideoState, frame_idx: int, obj_id: int, mask):
        """A binary mask (H, W) for one object on one frame; it becomes the output for that frame."""
        state = inference_state
        self._check_frame(state, frame_idx)
        obj = self._obj(state, obj_id)
        m = mask_prompt(mask, self.image_size, self.device)
        obj.masks[frame_idx] = m
        obj.points.pop(frame_idx, None)
        key = COND if frame_idx not in obj.tracked else NON_COND
        with autocast(self.device, self.dtype):
            feats = self._features(state, frame_idx)
            out = segment_prompted(self.model, feats, None, None, None, m, None, self.fill_hole_area)
        obj.temp[key][frame_idx] = out.memory_entry(0, None)
        return frame_idx, state.obj_ids, self._frame_masks(state, frame_idx, key)

    # ---- propagation ----------------------------------------------------------------------

    @torch.inference_mode()
    def propagate_in_video_preflight(self, inference_state: VideoState) -> None:
        """Encode the memories of newly prompted frames and file them as conditioning/non-conditioning."""
        state = inference_state
        if not state.objects:
            raise RuntimeError("No input points or masks are provided for any object; please add inputs first.")
        for obj in state.objects.values():
            for key in (NON_COND, COND):
                for frame_idx, entry in obj.temp[key].items():
                    if entry.maskmem is None:
                        with autocast(self.device, self.dtype):
                            feats = self._features(state, frame_idx)
                            entry.maskmem = prompt_memory(self.model, feats, entry.low_res[None].to(self.device),
                                                          entry.object_score_logit[None])[0]
                    (obj.track.cond if key == COND else obj.track.non_cond)[frame_idx] = entry
                obj.temp[key].clear()
            if not obj.track.cond:
                raise RuntimeError(
                    f"No input points or masks are provided for object id {obj.track.obj_id}; please add inputs first."
                )
            for frame_idx in obj.track.cond:
                obj.track.non_cond.pop(frame_idx, None)

    @torch.inference_mode()
    def propagate_in_video(self, inference_state: VideoState, start_frame_idx: int | None = None,
                           max_frame_num_to_track: int | None = None, reverse: bool = False):
        """Yield (frame_idx, obj_ids, masks (O, 1, H, W) logits) for each frame in tracking order."""
        state = inference_state
        self.propagate_in_video_preflight(state)
        n = state.num_frames
        if start_frame_idx is None:
            start_frame_idx = min(t for o in state.objects.values() for t in o.track.cond)
        if max_frame_num_to_track is None:
            max_frame_num_to_track = n
        if reverse:
            end = max(start_frame_idx - max_frame_num_to_track, 0)
            order = range(start_frame_idx, end - 1, -1) if start_frame_idx > 0 else []
        else:
            end = min(start_frame_idx + max_frame_num_to_track, n - 1)
            order = range(start_frame_idx, end + 1)
        for frame_idx in tqdm(order, desc="propagate in video", disable=not self.progress):
            lows = self._track_frame(state, frame_idx, reverse)
            masks = torch.cat([lows[obj_id] for obj_id in state.objects])
            yield frame_idx, state.obj_ids, self._to_video(state, masks)

    def _track_frame(self, state: VideoState, frame_idx: int, reverse: bool) -> dict[int, torch.Tensor]:
        lows: dict[int, torch.Tensor] = {}
        followers = []
        for obj_id, obj in state.objects.items():
            if frame_idx in obj.track.cond:
                lows[obj_id] = obj.track.cond[frame_idx].low_res[None]
            else:
                followers.append((obj, select_memories(obj.track, frame_idx, reverse, state.num_frames, self.model.cfg)))
            obj.tracked[frame_idx] = reverse
        if followers:
            with autocast(self.device, self.dtype):
                feats = self._features(state, frame_idx)
                for objs, sels in group_by_layout(followers):
                    step = track_objects(self.model, feats.expand(len(objs)), sels, self.fill_hole_area)
                    for i, obj in enumerate(objs):
                        obj.track.non_cond[frame_idx] = step.memory_entry(i)
                        lows[obj.track.obj_id] = step.heads.low_res[i : i + 1]
        return lows

    # ---- editing --------------------------------------------------------------------------

    @torch.inference_mode()
    def clear_all_prompts_in_frame(self, inference_state: VideoState, frame_idx: int, obj_id: int,
                                   need_output: bool = True):
        """Remove one object's prompts on a frame (its output there becomes an ordinary tracked frame)."""
        state = inference_state
        obj = self._obj(state, obj_id)
        obj.points.pop(frame_idx, None)
        obj.masks.pop(frame_idx, None)
        obj.temp[COND].pop(frame_idx, None)
        obj.temp[NON_COND].pop(frame_idx, None)
        entry = obj.track.cond.pop(frame_idx, None)
        if entry is not None:
            obj.track.non_cond[frame_idx] = entry
            obj.tracked.pop(frame_idx, None)
        if not need_output:
            return None
        return frame_idx, state.obj_ids, self._frame_masks(state, frame_idx, self._kind_shown(state, frame_idx))

    @torch.inference_mode()
    def remove_object(self, inference_state: VideoState, obj_id: int, strict: bool = False, need_output: bool = True):
        """Remove an object; returns (obj_ids, [(frame_idx, masks)] for frames where it had prompts)."""
        state = inference_state
        obj = state.objects.get(int(obj_id))
        if obj is None:
            if strict:
                raise RuntimeError(f"Cannot remove object id {obj_id} as it doesn't exist. "
                                   f"All existing object ids: {state.obj_ids}.")
            return state.obj_ids, []
        frames = set(obj.points) | set(obj.masks)
        del state.objects[int(obj_id)]
        updated = []
        if need_output and state.objects:
            for frame_idx in sorted(frames):
                updated.append((frame_idx, self._frame_masks(state, frame_idx, self._kind_shown(state, frame_idx))))
        return state.obj_ids, updated

    @torch.inference_mode()
    def reset_state(self, inference_state: VideoState) -> None:
        """Remove all objects, prompts and tracking results."""
        inference_state.objects.clear()

    # ---- helpers --------------------------------------------------------------------------

    def _check_frame(self, state: VideoState, frame_idx: int) -> None:
        if not 0 <= frame_idx < state.num_frames:
            raise IndexError(f"frame_idx {frame_idx} is outside the video (0..{state.num_frames - 1})")

    def _kind_shown(self, state: VideoState, frame_idx: int) -> str:
        """Which pending prompts a frame's output shows: conditioning ones if any object has one there."""
        return COND if any(frame_idx in o.temp[COND] for o in state.objects.values()) else NON_COND

    def _frame_masks(self, state: VideoState, frame_idx: int, key: str) -> torch.Tensor:
        """All objects' current logits on a frame at video resolution; objects without output get NO_OBJ_SCORE."""
        out = torch.full((len(state.objects), 1, state.video_height, state.video_width), NO_OBJ_SCORE,
                         device=self.device)
        for i, obj in enumerate(state.objects.values()):
            entry = obj.temp[key].get(frame_idx) or obj.track.entry(frame_idx)
            if entry is not None and entry.low_res is not None:
                out[i : i + 1] = self._to_video(state, entry.low_res[None].to(self.device))
        return out

    def _to_video(self, state: VideoState, low_res: torch.Tensor) -> torch.Tensor:
        return F.interpolate(low_res.float(), size=(state.video_height, state.video_width), mode="bilinear",
                             align_corners=False)
