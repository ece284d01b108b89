"""ImagePredictor: Meta's SAM2ImagePredictor API (set_image, predict, predict_batch) on our model."""

from __future__ import annotations

import numpy as np
import torch

from .mask_ops import fill_small_regions
from .modeling.sam2_model import ImageFeatures, SAM2Model
from .precision import autocast
from .prompt_inputs import LOW_RES_CLAMP, mask_logits_prompt, prompt_points
from .transforms import as_rgb_uint8, preprocess, upscale_masks


class ImagePredictor:
    """Computes an image's embedding once, then answers point / box / mask prompts against it.

    Not thread-safe (the current image is instance state); the service shares the model, not this object.
    """

    def __init__(
        self,
        model: SAM2Model,
        mask_threshold: float = 0.0,
        max_hole_area: float = 0.0,
        max_sprinkle_area: float = 0.0,
        dtype: torch.dtype = torch.float32,
        resize: str = "bilinear",
    ) -> None:
        self.model = model
        self.resize = resize  # the reference image predictor's filter; "area": OpenCV on the host
        self.mask_threshold = mask_threshold
        self.max_hole_area = max_hole_area
        self.max_sprinkle_area = max_sprinkle_area
        self.dtype = dtype
        self.reset_predictor()

    # ---- images -------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def is_image_set(self) -> bool:
        return self._features is not None

    @property
    def orig_hw(self) -> list[tuple[int, int]]:
        return list(self._orig_hw)

    def reset_predictor(self) -> None:
        self._features: ImageFeatures | None = None
        self._decode_feats: ImageFeatures | None = None  # _features in the decoder's dtype, made once
        self._orig_hw: list[tuple[int, int]] = []
        self._is_batch = False

    @torch.inference_mode()
    def encode(self, images: list) -> ImageFeatures:
        """Encode a list of images (any sizes) in one batch; returns float32 features."""
        arrays = [as_rgb_uint8(im) for im in images]
        x = torch.stack([preprocess(a, self.model.image_size, self.device, self.resize) for a in arrays])
        with autocast(self.device, self.dtype):
            feats = self.model.image_features(x)
        return feats.to(torch.float32)

    def set_image(self, image) -> None:
        """Compute the embedding of one HWC RGB image (uint8 array or PIL)."""
        image = as_rgb_uint8(image)
        self.set_features(self.encode([image]), [image.shape[:2]])

    def set_image_batch(self, images: list) -> None:
        """Compute the embeddings of several images in one encoder call, for `predict_batch`."""
        if not isinstance(images, (list, tuple)) or not images:
            raise ValueError("set_image_batch expects a non-empty list of images")
        arrays = [as_rgb_uint8(im) for im in images]
        self.set_features(self.encode(arrays), [a.shape[:2] for a in arrays])
        self._is_batch = True

    def get_image_embedding(self) -> torch.Tensor:
        """The (B, 256, s, s) embedding of the current image(s)."""
        return self._require_features().image_embed

    def get_features(self) -> ImageFeatures:
        """The current image's features, to cache and later hand back to `set_features`."""
        return self._require_features()

    def set_features(self, features: ImageFeatures, orig_hw: list[tuple[int, int]]) -> None:
        """Reuse features computed earlier (by `encode` or `get_features`) for images of the given sizes."""
        if features.batch_size != len(orig_hw):
            raise ValueError(f"{features.batch_size} feature maps but {len(orig_hw)} image sizes")
        self._features = features.to(self.device)
        self._decode_feats = None
        self._orig_hw = [tuple(int(v) for v in hw) for hw in orig_hw]
        self._is_batch = len(orig_hw) > 1

    def _require_features(self) -> ImageFeatures:
        if self._features is None:
            raise RuntimeError("no image is set: call set_image() (or set_image_batch()) first")
        return self._features

    # ---- prompts ------------------------------------------------------------------------------

    def predict(
        self,
        point_coords=None,
        point_labels=None,
        box=None,
        mask_input=None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for the current image: (C, H, W) for one prompt set, (B, C, H, W) for B boxes/point sets.

        point_coords (N, 2) or (B, N, 2) as (x, y) pixels; point_labels (N,) or (B, N), 1 fg / 0 bg;
        box (4,) or (B, 4) xyxy pixels; mask_input (1, 4s, 4s) or (B, 1, 4s, 4s) logits from a previous call.
        Returns masks, IoU predictions (C,) / (B, C), low-resolution logits (C, 4s, 4s) / (B, C, 4s, 4s).
        """
        if self._is_batch:
            raise RuntimeError("a batch of images is set: use predict_batch()")
        masks, ious, low_res = self.predict_torch(
            0, point_coords, point_labels, box, mask_input, multimask_output, return_logits, normalize_coords
        )
        out = [t.squeeze(0).float().cpu().numpy() for t in (masks, ious, low_res)]
        return out[0], out[1], out[2]

    def predict_batch(
        self,
        point_coords_batch=None,
        point_labels_batch=None,
        box_batch=None,
        mask_input_batch=None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """`predict` for each image of `set_image_batch`, with per-image prompt lists."""
        n = len(self._require_features().high_res_feats[0])

        def pick(batch, i):
            return None if batch is None else batch[i]

        all_masks, all_ious, all_low = [], [], []
        for i in range(n):
            masks, ious, low = self.predict_torch(
                i, pick(point_coords_batch, i), pick(point_labels_batch, i), pick(box_batch, i),
                pick(mask_input_batch, i), multimask_output, return_logits, normalize_coords,
            )
            all_masks.append(masks.squeeze(0).float().cpu().numpy())
            all_ious.append(ious.squeeze(0).float().cpu().numpy())
            all_low.append(low.squeeze(0).float().cpu().numpy())
        return all_masks, all_ious, all_low

    @torch.inference_mode()
    def predict_torch(
        self,
        img_idx: int,
        point_coords=None,
        point_labels=None,
        box=None,
        mask_input=None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tensor version of `predict` for image `img_idx`; always batched: (B, C, H, W), (B, C), (B, C, 4s, 4s)."""
        feats = self.decode_features()[img_idx]
        orig_hw = self._orig_hw[img_idx]
        coords, labels = self.prompt_points(point_coords, point_labels, box, orig_hw, normalize_coords)
        masks_in = mask_logits_prompt(mask_input, self.device)
        if coords is None and masks_in is None:
            raise ValueError("give at least one of point_coords, box or mask_input")
        return self.decode(feats, orig_hw, coords, labels, masks_in, multimask_output, return_logits)

    def prompt_points(
        self, point_coords, point_labels, box, orig_hw: tuple[int, int], normalize_coords: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Points and boxes as one (B, N, 2) model-pixel tensor with labels; a box becomes corners labelled 2, 3."""
        return prompt_points(point_coords, point_labels, box, orig_hw, self.model.image_size, self.device,
                             normalize_coords)

    def decode(
        self,
        feats: ImageFeatures,
        orig_hw: tuple[int, int],
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
        return_logits: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the prompt encoder + decoder for B prompt sets on one image and bring masks to its size."""
        feats = self.to_decoder_dtype(feats)
        with autocast(self.device, self.dtype):
            out = self.model.decode(feats, coords, labels, mask_input, multimask_output)
        low_res = out.masks.float()
        low_res = self.clean_regions(low_res)
        masks = upscale_masks(low_res, orig_hw)
        if not return_logits:
            masks = masks > self.mask_threshold
        return masks, out.iou_pred.float(), low_res.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)

    def decode_features(self) -> ImageFeatures:
        """The current image's features in the decoder's dtype, cast once per image rather than per prompt."""
        if self._decode_feats is None:
            self._decode_feats = self.to_decoder_dtype(self._require_features())
        return self._decode_feats

    def to_decoder_dtype(self, feats: ImageFeatures) -> ImageFeatures:
        """Features in the dtype the decoder computes in: with bf16/fp16 autocast, the fine feature maps would
        otherwise keep the decoder's largest activations (B x 32 x 4s x 4s) in fp32 and cast them per op."""
        return feats if self.dtype == torch.float32 else feats.to(self.dtype)

    def clean_regions(self, logits: torch.Tensor) -> torch.Tensor:
        """Fill background holes <= max_hole_area and drop foreground specks <= max_sprinkle_area (low-res)."""
        thr = self.mask_threshold
        return fill_small_regions(logits, thr, self.max_hole_area, thr + 10.0, self.max_sprinkle_area, thr - 10.0)
