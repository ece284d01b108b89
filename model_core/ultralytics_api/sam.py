"""`SAM`: Ultralytics' model class for SAM 2 on our predictors: prompts give one mask per object, no prompts
segment everything, on every image or frame of the source."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..automatic_mask_generator import AutomaticMaskGenerator
from ..image_predictor import ImagePredictor
from ..model_loading import resolve_device
from ..modeling.sam2_model import SAM2Model
from .loading import at_image_size, load_model, model_summary
from .options import PredictOptions
from .prompts import ObjectPrompts, object_prompts
from .results import Results, make_results
from .sources import SourceImage, iter_source

# Ultralytics' segment-everything defaults (its Predictor.generate) under their names, and our generator's names
EVERYTHING_DEFAULTS = {
    "points_stride": ("points_per_side", 32), "points_batch_size": ("points_per_batch", 64),
    "conf_thres": ("pred_iou_thresh", 0.88), "stability_score_thresh": ("stability_score_thresh", 0.95),
    "stability_score_offset": ("stability_score_offset", 0.95), "crop_n_layers": ("crop_n_layers", 0),
    "crop_overlap_ratio": ("crop_overlap_ratio", 512 / 1500),
    "crop_downscale_factor": ("crop_n_points_downscale_factor", 1), "crop_nms_thresh": ("crop_nms_thresh", 0.7),
    "min_mask_region_area": ("min_mask_region_area", 0),
}


class SAM:
    """`SAM("sam2.1_b.pt")`: a model name, a checkpoint path, or a built SAM2Model; call it on a source."""

    task = "segment"

    def __init__(self, model: str | SAM2Model = "sam2.1_b.pt", device: str | None = None) -> None:
        self.model = load_model(model, None, device)
        self._sized: dict[tuple[int, str], SAM2Model] = {}

    @property
    def device(self) -> torch.device:
        return self.model.device

    def to(self, device) -> "SAM":
        self.model = self.model.to(resolve_device(device))
        self._sized.clear()
        return self

    def info(self, detailed: bool = False, verbose: bool = True) -> tuple[int, int, int, None]:
        """Print and return (layers, parameters, gradients, GFLOPs); GFLOPs are not computed (None)."""
        layers, params, grads = model_summary(self.model)
        if verbose:
            if detailed:
                for name, p in self.model.named_parameters():
                    print(f"{name:70s} {str(tuple(p.shape)):>22s} {p.numel():>12,d}")
            cfg = self.model.cfg
            print(f"{cfg.name} (SAM {cfg.version}, image_size {cfg.image_size}) summary: {layers:,} layers, "
                  f"{params:,} parameters, {grads:,} gradients")
        return layers, params, grads, None

    def __call__(self, source=None, stream: bool = False, bboxes=None, points=None, labels=None, **kwargs):
        return self.predict(source, stream, bboxes, points, labels, **kwargs)

    def predict(self, source=None, stream: bool = False, bboxes=None, points=None, labels=None, **kwargs):
        """A list of Results, one per image or video frame (a generator with stream=True).

        Prompts apply to every image: each box, each flat point and each nested list of points is one object.
        Without prompts, everything is segmented (Ultralytics' generate parameters are accepted).
        """
        opts = PredictOptions(model=self.model).updated(kwargs)
        prompts = object_prompts(bboxes, points, labels)
        model = self._model_for(opts)
        results = self._stream(iter_source(source), model, prompts, opts)
        return results if stream else list(results)

    def _model_for(self, opts: PredictOptions) -> SAM2Model:
        """The model at imgsz on the device asked for (by default where it is), made once per (size, device)."""
        device = self.model.device if opts.device in (None, "") else resolve_device(opts.device)
        size = opts.image_size or self.model.cfg.image_size
        if (size, str(device)) not in self._sized:
            self._sized[(size, str(device))] = at_image_size(self.model, size).to(device)
        return self._sized[(size, str(device))]

    def _stream(self, images: Iterator[SourceImage], model: SAM2Model, prompts: ObjectPrompts | None,
                opts: PredictOptions) -> Iterator[Results]:
        if prompts is not None:
            predictor = ImagePredictor(model, dtype=opts.dtype_on(model.device))
            for item in images:
                yield prompted_results(predictor, item, prompts, opts.conf)
        else:
            generator = everything_generator(model, opts)
            for item in images:
                yield everything_results(generator, item, opts.conf)


def prompted_results(predictor: ImagePredictor, item: SourceImage, prompts: ObjectPrompts, conf: float) -> Results:
    """One mask per object (multimask off, as Ultralytics); masks whose predicted IoU is <= conf are dropped."""
    if prompts.masks is not None:
        raise ValueError("SAM takes bboxes and points; mask prompts go to the video predictors")
    predictor.set_image(item.rgb)
    with torch.inference_mode():
        masks, ious, _ = predictor.predict_torch(0, prompts.points, prompts.labels, prompts.boxes,
                                                 multimask_output=False)  # (N, 1, H, W), (N, 1)
    return make_results(item.rgb, item.path, masks[:, 0], ious[:, 0], torch.arange(len(masks)), conf, len(masks))


def everything_generator(model: SAM2Model, opts: PredictOptions) -> AutomaticMaskGenerator:
    params = {ours: default for ours, default in EVERYTHING_DEFAULTS.values()}
    for key, value in opts.everything:
        params[EVERYTHING_DEFAULTS[key][0]] = value
    return AutomaticMaskGenerator(model, box_nms_thresh=opts.iou, dtype=opts.dtype_on(model.device), **params)


def everything_results(generator: AutomaticMaskGenerator, item: SourceImage, conf: float) -> Results:
    records = generator.generate(item.rgb)
    h, w = item.rgb.shape[:2]
    masks = torch.from_numpy(np.stack([r["segmentation"] for r in records])) if records else \
        torch.zeros(0, h, w, dtype=torch.bool)
    ious = torch.tensor([float(r["predicted_iou"]) for r in records], dtype=torch.float32)
    return make_results(item.rgb, item.path, masks, ious, torch.arange(len(records)), conf, len(records))
