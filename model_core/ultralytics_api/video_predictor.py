"""`SAM2VideoPredictor`: Ultralytics' video predictor on our streaming VideoTracker. The prompts are given on the
first frame, each one object (id = its index), and tracked through the video one frame at a time."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..modeling.sam2_model import SAM2Model
from ..video_tracker import VideoTracker
from .loading import load_model
from .options import PredictOptions, from_overrides
from .prompts import ObjectPrompts, object_prompts
from .results import Results
from .sources import iter_video
from .tracked_results import tracked_results

DEFAULT_MODEL = "sam2.1_b.pt"


class SAM2VideoPredictor:
    """`SAM2VideoPredictor(overrides=dict(conf=0.25, imgsz=1024, model="sam2_b.pt"))(source=video, points=...)`."""

    def __init__(self, cfg: dict | None = None, overrides: dict | None = None, _callbacks=None) -> None:
        self.args: PredictOptions = from_overrides({**(cfg or {}), **(overrides or {})}, model=DEFAULT_MODEL)
        self._model: SAM2Model | None = None

    @property
    def model(self) -> SAM2Model:
        """Loaded on first use, at imgsz, on the device the overrides name."""
        if self._model is None:
            self._model = load_model(self.args.model, self.args.image_size, self.args.device)
        return self._model

    def __call__(self, source=None, model=None, stream: bool = False, bboxes=None, points=None, labels=None,
                 masks=None):
        """A list of Results, one per frame (a generator with stream=True)."""
        if model is not None:
            self._model = load_model(model, self.args.image_size, self.args.device)
        prompts = object_prompts(bboxes, points, labels, masks)
        if prompts is None:
            raise ValueError("give the objects to track: bboxes, points (with labels) or masks on the first frame")
        results = self._track(source, prompts)
        return results if stream else list(results)

    def _track(self, source, prompts: ObjectPrompts) -> Iterator[Results]:
        tracker = VideoTracker(self.model, dtype=self.args.dtype_on(self.model.device))
        state = None
        for item in iter_video(source):
            if state is None:
                h, w = item.rgb.shape[:2]
                state = tracker.new_state(h, w, num_frames=item.num_frames)
                for obj_id in range(len(prompts)):
                    tracker.add_prompt(state, obj_id, **prompts.one(obj_id))
            out = tracker.track(state, item.rgb)
            # Ultralytics scores a tracked object 1 when its mask is not empty, 0 otherwise
            scores = torch.tensor([float(o.mask.any()) for o in out.objects])
            yield tracked_results(item, out.objects, scores, self.args.conf, len(prompts))
