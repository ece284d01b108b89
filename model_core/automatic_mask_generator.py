"""AutomaticMaskGenerator ("segment everything"): a grid of point prompts, filtered and de-duplicated masks.

Same parameters and output records as Meta's SAM2AutomaticMaskGenerator (the SA-1B annotation fields).
Cheaper where results cannot change: masks are dropped by predicted IoU before they are upsampled,
upsampling and scoring run in chunks on the model's device, and RLE encoding is pycocotools' C code.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .image_predictor import ImagePredictor
from .mask_ops import (
    decode_rle,
    encode_rle,
    masks_to_boxes,
    nms,
    remove_small_regions,
    rle_area,
    stability_score,
    uncompressed_rle,
)
from .modeling.sam2_model import ImageFeatures, SAM2Model
from .precision import autocast
from .prompt_inputs import LOW_RES_CLAMP
from .transforms import as_rgb_uint8, to_model_coords, upscale_masks

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


def point_grid(n_per_side: int) -> np.ndarray:
    """n*n cell centres of the unit square as (x, y), row by row."""
    c = (np.arange(n_per_side) + 0.5) / n_per_side
    xs, ys = np.meshgrid(c, c)
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def layer_point_grids(n_per_side: int, n_layers: int, downscale: int) -> list[np.ndarray]:
    """One grid per crop layer; layer i has n_per_side / downscale**i points per side."""
    return [point_grid(int(n_per_side / downscale**i)) for i in range(n_layers + 1)]


def crop_boxes(hw: tuple[int, int], n_layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """The whole image, then layer i's 2**i x 2**i overlapping crops: xyxy boxes and their layer index."""
    h, w = hw
    boxes, layers = [[0, 0, w, h]], [0]
    for layer in range(1, n_layers + 1):
        n = 2**layer
        overlap = int(overlap_ratio * min(h, w) * (2 / n))
        crop_w = math.ceil((overlap * (n - 1) + w) / n)
        crop_h = math.ceil((overlap * (n - 1) + h) / n)
        x0s = [int((crop_w - overlap) * i) for i in range(n)]
        y0s = [int((crop_h - overlap) * i) for i in range(n)]
        for x0, y0 in itertools.product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, w), min(y0 + crop_h, h)])
            layers.append(layer)
    return boxes, layers


def near_crop_edge(boxes: torch.Tensor, crop: list[int], image_box: list[int], atol: float = 20.0) -> torch.Tensor:
    """Boxes (in image coordinates) touching a crop border that is not also an image border: (N, 4) -> (N,)."""
    crop_t = torch.as_tensor(crop, dtype=torch.float32, device=boxes.device)
    image_t = torch.as_tensor(image_box, dtype=torch.float32, device=boxes.device)
    at_crop = (boxes - crop_t).abs() <= atol
    at_image = (boxes - image_t).abs() <= atol
    return (at_crop & ~at_image).any(dim=1)


@dataclass(frozen=True)
class GeneratorParams:
    """The generator's settings after validation (Meta's parameter names)."""

    points_per_batch: int
    pred_iou_thresh: float
    stability_score_thresh: float
    stability_score_offset: float
    mask_threshold: float
    box_nms_thresh: float
    crop_n_layers: int
    crop_nms_thresh: float
    crop_overlap_ratio: float
    min_mask_region_area: int
    output_mode: str
    use_m2m: bool
    multimask_output: bool
    upsample_chunk: int


@dataclass
class _Candidates:
    """Masks that survived filtering, as parallel lists/arrays (boxes xyxy and points in image pixels)."""

    rles: list[dict] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    iou_preds: list[float] = field(default_factory=list)
    stability: list[float] = field(default_factory=list)
    points: list[np.ndarray] = field(default_factory=list)
    crop_boxes: list[list[int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rles)

    def extend(self, other: "_Candidates") -> None:
        for name in self.__dataclass_fields__:
            getattr(self, name).extend(getattr(other, name))

    def select(self, keep) -> "_Candidates":
        return _Candidates(**{n: [getattr(self, n)[int(i)] for i in keep] for n in self.__dataclass_fields__})


class AutomaticMaskGenerator:
    """Segments everything in an image; parameters as in Meta's SAM2AutomaticMaskGenerator."""

    def __init__(
        self,
        model: SAM2Model,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        mask_threshold: float = 0.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        use_m2m: bool = False,
        multimask_output: bool = True,
        dtype: torch.dtype = torch.float32,
        upsample_chunk: int = 32,
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side or point_grids")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        if points_per_batch < 1:
            raise ValueError("points_per_batch must be >= 1")
        if point_grids is None:
            point_grids = layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
        if len(point_grids) != crop_n_layers + 1:
            raise ValueError(f"need {crop_n_layers + 1} point grids (one per crop layer), got {len(point_grids)}")
        self.point_grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
        self.predictor = ImagePredictor(
            model, mask_threshold, max_hole_area=min_mask_region_area, max_sprinkle_area=min_mask_region_area,
            dtype=dtype,
        )
        self.params = GeneratorParams(
            points_per_batch, pred_iou_thresh, stability_score_thresh, stability_score_offset, mask_threshold,
            box_nms_thresh, crop_n_layers, crop_nms_thresh, crop_overlap_ratio, min_mask_region_area, output_mode,
            use_m2m, multimask_output, upsample_chunk,
        )
        self._full_features: ImageFeatures | None = None
        self.images_encoded = 0

    @property
    def model(self) -> SAM2Model:
        return self.predictor.model

    @torch.inference_mode()
    def generate(self, image, features: ImageFeatures | None = None) -> list[dict]:
        """All masks of an HWC RGB image as SA-1B style records.

        Each record: segmentation (per output_mode), area, bbox (xywh), predicted_iou, point_coords,
        stability_score, crop_box (xywh). `features`: the whole image's features computed earlier (batch 1),
        used instead of encoding it again; crops are always encoded. `images_encoded` counts encoder calls.
        """
        steps = self.steps(image, features)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    def steps(self, image, features: ImageFeatures | None = None) -> Generator[None, None, list[dict]]:
        """`generate` as a generator that pauses after each crop's encode and each batch of points (a
        scheduler interleaves other work there; call next() under torch.inference_mode); returns `generate`'s."""
        image = as_rgb_uint8(image)
        self._full_features = features
        self.images_encoded = 0
        try:
            cands = yield from self._generate(image)
        finally:
            self._full_features = None
        records = []
        for i in range(len(cands)):
            rle = cands.rles[i]
            if self.params.output_mode == "coco_rle":
                seg = rle
            elif self.params.output_mode == "binary_mask":
                seg = decode_rle(rle)
            else:
                seg = uncompressed_rle(decode_rle(rle))
            x0, y0, x1, y1 = (float(v) for v in cands.boxes[i])
            cx0, cy0, cx1, cy1 = cands.crop_boxes[i]
            records.append({
                "segmentation": seg,
                "area": rle_area(rle),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "predicted_iou": float(cands.iou_preds[i]),
                "point_coords": [[float(v) for v in cands.points[i]]],
                "stability_score": float(cands.stability[i]),
                "crop_box": [cx0, cy0, cx1 - cx0, cy1 - cy0],
            })
        return records

    def _generate(self, image: np.ndarray) -> Generator[None, None, _Candidates]:
        hw = image.shape[:2]
        boxes, layers = crop_boxes(hw, self.params.crop_n_layers, self.params.crop_overlap_ratio)
        cands = _Candidates()
        for crop, layer in zip(boxes, layers):
            cands.extend((yield from self._process_crop(image, crop, layer, hw)))
        if len(boxes) > 1 and len(cands):
            # the same object seen in several crops: prefer the mask from the smallest crop
            areas = np.array([(c[2] - c[0]) * (c[3] - c[1]) for c in cands.crop_boxes], dtype=np.float64)
            cands = cands.select(nms(np.stack(cands.boxes), 1.0 / areas, self.params.crop_nms_thresh))
        if self.params.min_mask_region_area > 0 and len(cands):
            cands = self._clean_small_regions(cands)
        return cands

    def _process_crop(self, image: np.ndarray, crop: list[int], layer: int, hw: tuple[int, int]
                      ) -> Generator[None, None, _Candidates]:
        x0, y0, x1, y1 = crop
        crop_img = image[y0:y1, x0:x1]
        crop_hw = crop_img.shape[:2]
        if self._full_features is not None and tuple(crop_hw) == tuple(hw):
            self.predictor.set_features(self._full_features, [crop_hw])
        else:
            self.predictor.set_image(crop_img)
            self.images_encoded += 1
            yield
        points = self.point_grids[layer] * np.array([crop_hw[1], crop_hw[0]], dtype=np.float64)
        cands = _Candidates()
        for start in range(0, len(points), self.params.points_per_batch):
            cands.extend(self._process_batch(points[start : start + self.params.points_per_batch], crop_hw, crop, hw))
            yield
        self.predictor.reset_predictor()
        if not len(cands):
            return cands
        cands = cands.select(nms(np.stack(cands.boxes), np.array(cands.iou_preds), self.params.box_nms_thresh))
        offset = np.array([x0, y0], dtype=np.float64)
        cands.boxes = [b + np.concatenate([offset, offset]) for b in cands.boxes]
        cands.points = [p + offset for p in cands.points]
        cands.crop_boxes = [list(crop) for _ in range(len(cands))]
        return cands

    def _decode(self, coords: torch.Tensor, labels: torch.Tensor, mask_input, multimask: bool):
        feats = self.predictor.decode_features()
        with autocast(self.predictor.device, self.predictor.dtype):
            out = self.model.decode(feats, coords, labels, mask_input, multimask)
        low = out.masks.float()
        low = self.predictor.clean_regions(low)
        return low.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP), out.iou_pred.float()

    def _process_batch(
        self, points: np.ndarray, crop_hw: tuple[int, int], crop: list[int], hw: tuple[int, int]
    ) -> _Candidates:
        dev, size = self.predictor.device, self.model.image_size
        pts = torch.as_tensor(points, dtype=torch.float32, device=dev)
        coords = to_model_coords(pts[:, None, :], crop_hw, size)
        labels = torch.ones(coords.shape[:2], dtype=torch.int64, device=dev)
        low, iou = self._decode(coords, labels, None, self.params.multimask_output)  # (B, M, h, w), (B, M)
        m = low.shape[1]
        low, iou = low.flatten(0, 1), iou.flatten(0, 1)
        pts = pts.repeat_interleave(m, dim=0)
        if self.params.use_m2m:
            refined = [
                self._decode(to_model_coords(pts[s : s + self.params.points_per_batch, None], crop_hw, size),
                             torch.ones(len(pts[s : s + self.params.points_per_batch]), 1, dtype=torch.int64, device=dev),
                             low[s : s + self.params.points_per_batch, None], False)
                for s in range(0, len(pts), self.params.points_per_batch)
            ]
            low = torch.cat([r[0][:, 0] for r in refined])
            iou = torch.cat([r[1][:, 0] for r in refined])
        keep = torch.ones_like(iou, dtype=torch.bool)
        if self.params.pred_iou_thresh > 0:
            keep &= iou > self.params.pred_iou_thresh  # cheap: before any full-resolution work
        idx = torch.nonzero(keep).flatten()

        out = _Candidates()
        image_box = [0, 0, hw[1], hw[0]]
        x0, y0, x1, y1 = crop
        for start in range(0, len(idx), self.params.upsample_chunk):
            sel = idx[start : start + self.params.upsample_chunk]
            logits = upscale_masks(low[sel][:, None], crop_hw)[:, 0]  # (n, H_crop, W_crop)
            stab = stability_score(logits, self.params.mask_threshold, self.params.stability_score_offset)
            ok = stab >= self.params.stability_score_thresh if self.params.stability_score_thresh > 0 else torch.ones_like(stab, dtype=torch.bool)
            binary = logits > self.params.mask_threshold
            boxes = masks_to_boxes(binary)
            offset = torch.tensor([x0, y0, x0, y0], dtype=torch.float32, device=dev)
            ok &= ~near_crop_edge(boxes + offset, crop, image_box)
            ok_idx = torch.nonzero(ok).flatten()
            if not len(ok_idx):
                continue
            binary = binary[ok_idx]
            if (x0, y0, x1, y1) != (0, 0, hw[1], hw[0]):
                binary = torch.nn.functional.pad(binary, (x0, hw[1] - x1, y0, hw[0] - y1))
            out.rles += encode_rle(binary.cpu().numpy())
            out.boxes += list(boxes[ok_idx].cpu().numpy().astype(np.float64))
            out.iou_preds += iou[sel][ok_idx].cpu().tolist()
            out.stability += stab[ok_idx].cpu().tolist()
            out.points += list(pts[sel][ok_idx].cpu().numpy().astype(np.float64))
        out.crop_boxes = [list(crop) for _ in range(len(out))]
        return out

    def _clean_small_regions(self, cands: _Candidates) -> _Candidates:
        """Fill small holes and drop small islands; where that changed a mask, prefer unchanged duplicates."""
        masks, unchanged = [], []
        for rle in cands.rles:
            mask = decode_rle(rle)
            mask, filled = remove_small_regions(mask, self.params.min_mask_region_area, "holes")
            mask, dropped = remove_small_regions(mask, self.params.min_mask_region_area, "islands")
            masks.append(mask)
            unchanged.append(0.0 if (filled or dropped) else 1.0)
        boxes = masks_to_boxes(torch.from_numpy(np.stack(masks))).numpy().astype(np.float64)
        keep = nms(boxes, np.array(unchanged), self.params.box_nms_thresh)
        for i in keep:
            if unchanged[i] == 0.0:
                cands.rles[i] = encode_rle(masks[i][None])[0]
                cands.boxes[i] = boxes[i]
        return cands.select(keep)
