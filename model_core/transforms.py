"""Image and coordinate transforms between a user's image and the model's square input (opencv + torch)."""

from __future__ import annotations

import functools

import cv2
import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def as_rgb_uint8(image) -> np.ndarray:
    """Accept an HWC RGB uint8 array, a grayscale or RGBA array, or a PIL image; return HWC RGB uint8."""
    if not isinstance(image, np.ndarray):
        if hasattr(image, "convert"):  # PIL.Image without importing PIL
            image = np.array(image.convert("RGB"))  # a writable copy
        else:
            raise TypeError(f"expected a numpy array or PIL image, got {type(image).__name__}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and image.size and image.max() <= 1.0:
            image = image * 255.0
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError("image is empty")
    return np.ascontiguousarray(image)


RESIZES = ("bilinear", "bicubic", "area")


def preprocess(image, size: int, device: str | torch.device | None = None, resize: str = "bilinear") -> torch.Tensor:
    """HWC RGB uint8 -> (3, size, size) float32 on `device`, resized and ImageNet-normalised.

    The uint8 image is uploaded once and resized on the device. `resize` picks the reference's filter:
    "bilinear" (antialiased, on [0, 1] floats) as Meta's image predictor; "bicubic" (antialiased, rounded to
    uint8) as its video frame loader's PIL resize; "area" is OpenCV on the host (the old path, an option).
    """
    if resize == "area":
        return _preprocess_opencv(np.asarray(image), size).to(device)
    if resize not in RESIZES:
        raise ValueError(f"unknown resize {resize!r}; use one of {', '.join(RESIZES)}")
    x = torch.as_tensor(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None]  # (1, 3, H, W) uint8
    # the reference's arithmetic in its order (x / 255, - mean, / std), in place on tensors of our own
    if x.shape[-2:] == (size, size):
        x = x.to(torch.float32, memory_format=torch.contiguous_format, copy=True).div_(255.0)  # no filter changes it
    elif resize == "bilinear":
        x = x.to(torch.float32, copy=True).div_(255.0)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    else:
        # PIL resizes width, then height, rounding to uint8 (and so clipping the overshoot) after each pass
        x = x.float()
        for hw in ((x.shape[2], size), (size, size)):
            x = F.interpolate(x, size=hw, mode="bicubic", align_corners=False, antialias=True).round_().clamp_(0, 255)
        x = x.div_(255.0)
    mean, std = _normalisation(x.device)
    return x[0].sub_(mean).div_(std).contiguous()


@functools.lru_cache(maxsize=None)
def _normalisation(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std as (3, 1, 1) tensors on a device, made once (not a host-to-device copy per frame)."""
    return (torch.as_tensor(IMAGENET_MEAN, device=device)[:, None, None],
            torch.as_tensor(IMAGENET_STD, device=device)[:, None, None])


def _preprocess_opencv(image: np.ndarray, size: int) -> torch.Tensor:
    """OpenCV on the host: area filter when shrinking, bilinear otherwise (faster on small CPUs)."""
    h, w = image.shape[:2]
    shrink = size < h and size < w
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    x = (resized.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(x.transpose(2, 0, 1).copy())


def to_model_coords(coords: torch.Tensor, orig_hw: tuple[int, int], size: int, normalize: bool = True) -> torch.Tensor:
    """(..., 2) (x, y) in original-image pixels (normalize=True) or in [0, 1] -> model-input pixels."""
    coords = coords.float()
    if normalize:
        h, w = orig_hw
        coords = coords / torch.tensor([w, h], dtype=torch.float32, device=coords.device)
    return coords * size


def upscale_masks(low_res: torch.Tensor, orig_hw: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) logits -> (B, C, H, W) bilinear, in float32."""
    return F.interpolate(low_res.float(), size=orig_hw, mode="bilinear", align_corners=False)
