"""`SAM2DynamicInteractivePredictor`: Ultralytics' dynamic interactive mode on VideoTracker(mode="images").
Prompted images add objects to a shared memory; later images, of any size, are segmented from memory alone."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..modeling.sam2_model import SAM2Model
from ..video_tracker import TrackerState, VideoTracker
from .loading import load_model
from .options import PredictOptions, from_overrides
from .prompts import ObjectPrompts, object_prompts
from .results import Results
from .sources import SourceImage, iter_source
from .tracked_results import tracked_results

DEFAULT_MODEL = "sam2.1_b.pt"
PRESENCE_SCALE = 32.0  # Ultralytics' score: the object-score logit / 32, floored at 0


class NoObjectsError(ValueError, RuntimeError):
    """Nothing to find yet: no object was added to memory (a RuntimeError in Ultralytics, a ValueError here)."""


class SAM2DynamicInteractivePredictor:
    """`predictor(source=img, bboxes=..., obj_ids=[0], update_memory=True)` remembers objects;
    `predictor(source=img2)` finds them in a new image. Object ids are 0 .. max_obj_num - 1, as in Ultralytics."""

    def __init__(self, cfg: dict | None = None, overrides: dict | None = None, max_obj_num: int = 3,
                 _callbacks=None) -> None:
        if not isinstance(max_obj_num, int) or isinstance(max_obj_num, bool) or max_obj_num < 1:
            raise ValueError(f"max_obj_num must be a positive int, got {max_obj_num!r}")
        self.args: PredictOptions = from_overrides({**(cfg or {}), **(overrides or {})}, model=DEFAULT_MODEL)
        self.max_obj_num = max_obj_num
        self._model: SAM2Model | None = None
        self._tracker: VideoTracker | None = None
        self.state: TrackerState | None = None

    @property
    def model(self) -> SAM2Model:
        if self._model is None:
            self._model = load_model(self.args.model, self.args.image_size, self.args.device)
        return self._model

    @property
    def tracker(self) -> VideoTracker:
        if self._tracker is None:
            self._tracker = VideoTracker(self.model, dtype=self.args.dtype_on(self.model.device))
            self.state = self._tracker.new_state(0, 0, mode="images", max_obj_num=self.max_obj_num)
        return self._tracker

    @property
    def obj_ids(self) -> list[int]:
        """Objects in memory."""
        return [] if self.state is None else [i for i, t in self.state.objects.items() if t.cond]

    def reset(self) -> None:
        """Forget every object and its memory."""
        if self.state is not None:
            self.tracker.reset(self.state)

    def __call__(self, source=None, stream: bool = False, bboxes=None, masks=None, points=None, labels=None,
                 obj_ids=None, update_memory: bool = False):
        """A list of Results, one per image of the source (a generator with stream=True).

        With update_memory=True the prompts (one object per box / flat point / nested point list / mask) add the
        objects `obj_ids` to memory from this image. Without it, prompts segment those objects on this image only.
        """
        prompts = object_prompts(bboxes, points, labels, masks)
        ids = self._check_ids(obj_ids, prompts, update_memory)
        results = self._predict(iter_source(source), prompts, ids, update_memory)
        return results if stream else list(results)

    def _check_ids(self, obj_ids, prompts: ObjectPrompts | None, update_memory: bool) -> list[int]:
        if prompts is None:
            if update_memory:
                raise ValueError("update_memory=True needs prompts: bboxes, points or masks, with obj_ids")
            return []
        if obj_ids is None:
            raise ValueError("give obj_ids, one per prompted object")
        ids = [obj_ids] if isinstance(obj_ids, int) else list(obj_ids)
        if len(ids) != len(prompts):
            raise ValueError(f"{len(ids)} obj_ids for {len(prompts)} prompted objects")
        if len(set(ids)) != len(ids):
            raise ValueError(f"obj_ids must differ, got {ids}")
        for i in ids:
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < self.max_obj_num:
                raise ValueError(f"obj_id {i!r} is out of range: ids are 0 to {self.max_obj_num - 1} "
                                 f"(max_obj_num={self.max_obj_num})")
        return ids

    def _predict(self, images: Iterator[SourceImage], prompts: ObjectPrompts | None, ids: list[int],
                 update_memory: bool) -> Iterator[Results]:
        tracker = self.tracker
        state = self.state
        for item in images:
            if not ids and not self.obj_ids:
                raise NoObjectsError("no objects in memory yet: first call with prompts, obj_ids and "
                                     "update_memory=True")
            one_off = [i for i in ids if not update_memory and i not in self.obj_ids]
            for k, obj_id in enumerate(ids):
                tracker.add_prompt(state, obj_id, update_memory=update_memory, **prompts.one(k))
            out = tracker.track(state, item.rgb)
            for obj_id in one_off:  # segmented on this image only: not kept as an object without memory
                tracker.remove_object(state, obj_id)
            logits = torch.tensor([o.object_score_logit for o in out.objects])
            scores = (logits / PRESENCE_SCALE).clamp(min=0)
            yield tracked_results(item, out.objects, scores, self.args.conf, self.max_obj_num)
