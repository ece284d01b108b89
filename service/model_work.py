"""The model work the engine's loop runs: load and warm up, encode images in batches, decode prompts, segment
everything. No queue, no futures, no HTTP: every method runs on the engine's worker thread (but `prepare`,
`encoder_input`, `cache_key` and `lookup`, which handlers call).

On the CPU, torch runs on the worker thread only. Every thread that enters one of torch's OpenMP parallel regions
gets a team of its own, and once the process has more OpenMP threads than cores, OpenMP stops spinning between
regions: the worker's many small ops then wait on wake-ups (a tracking step at 64 px took 37-49 ms alone and
67-85 ms once another thread had resized one image; README, "Speed"). So on the CPU handlers hand the worker
the decoded image, and on CUDA the input they uploaded and resized on the device."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from model_core import (
    AutomaticMaskGenerator, ImageFeatures, ImagePredictor, SAM2Model, VideoTracker, build_model, get_config,
)
from model_core.compiled import CompileConfig, compile_model
from model_core.host_memory import keep_freed_memory
from model_core.mask_ops import masks_to_boxes
from model_core.model_loading import resolve_device
from model_core.precision import autocast, default_dtype, dtype_name, parse_dtype
from model_core.transforms import preprocess, upscale_masks

from .embedding_cache import CachedImage, EmbeddingCache
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger(__name__)


# ---- what handlers hand to the engine --------------------------------------------------------------------


@dataclass
class ImageInput:
    """One image for a job: either its cached features, or its pixels ready for the encoder."""

    image_id: str
    orig_hw: tuple[int, int]
    cached: CachedImage | None = None
    pixels: torch.Tensor | np.ndarray | None = None  # from Engine.encoder_input: (3, S, S), or on the CPU the image
    rgb: np.ndarray | None = None  # kept only when segment-everything crops need the pixels
    content_id: str | None = None  # sha256 of the bytes: identical uploads share one encoder slot
    tenant: str | None = None  # whose cache new features go to (None: not cached); set by the engine

    @property
    def needs_encoder(self) -> bool:
        return self.cached is None


@dataclass
class ObjectGroup:
    """Objects of one request with the same prompt shape, decoded together; arrays in image pixels."""

    indices: list[int]  # positions in the request's object list
    coords: np.ndarray | None  # (B, N, 2) xy
    labels: np.ndarray | None  # (B, N)
    boxes: np.ndarray | None  # (B, 4) xyxy
    mask_logits: np.ndarray | None  # (B, 1, 4s, 4s)

    def __len__(self) -> int:
        return len(self.indices)


@dataclass
class ObjectMasks:
    masks: np.ndarray  # (C, H, W) bool
    ious: np.ndarray  # (C,) predicted IoU of each mask
    boxes: np.ndarray  # (C, 4) xyxy, inclusive max


# ---- the work --------------------------------------------------------------------------------------------


class ModelWork:
    """One model on one device, its embedding cache, and every model call the service makes."""

    def __init__(self, settings: Settings, model: SAM2Model | None, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.device = resolve_device(settings.device) if model is None else model.device
        self.dtype = parse_dtype(settings.dtype) if settings.dtype else default_dtype(self.device)
        self.model: SAM2Model | None = model
        self.cache = EmbeddingCache(settings.cache_bytes, on_change=metrics.cache_bytes.set)
        self.counting = False  # warm-up is not traffic: metrics count once the engine is ready

    @property
    def model_key(self) -> str:
        """The model's identity in cache keys: name and input size (features differ for either)."""
        if self.model is not None:
            return f"{self.model.cfg.name}@{self.model.image_size}"
        return f"{self.settings.model}@{self.settings.image_size}"

    @property
    def image_size(self) -> int:
        if self.model is not None:
            return self.model.image_size
        return get_config(self.settings.model, self.settings.image_size).image_size

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.dtype)

    @property
    def mask_input_size(self) -> int:
        """Side of the low-resolution mask prompt (4x the embedding side: 256 at 1024 px)."""
        return self.model.sam_prompt_encoder.mask_input_size[0]

    # ---- for handlers ---------------------------------------------------------------------------------

    def cache_key(self, tenant: str, image_id: str) -> tuple:
        return (self.model_key, tenant, image_id)

    def lookup(self, tenant: str, image_id: str) -> CachedImage | None:
        """The cached features of an image, counting a hit or a miss."""
        entry = self.cache.get(self.cache_key(tenant, image_id))
        (self.metrics.cache_hits if entry is not None else self.metrics.cache_misses).inc()
        return entry

    def prepare(self, rgb: np.ndarray, resize: str = "bilinear") -> torch.Tensor:
        """HWC RGB uint8 -> the encoder's (3, S, S) input on the device; runs in a handler's thread.

        `resize`: the reference's filter for the path ("bilinear" images, "bicubic" video frames)."""
        return preprocess(rgb, self.image_size, self.device, resize)

    def encoder_input(self, rgb: np.ndarray, resize: str = "bilinear") -> torch.Tensor | np.ndarray:
        """What a handler's thread hands the worker for an image: on CUDA the prepared input (made there, beside
        the worker's steps); on the CPU the image itself, prepared on the worker (module docstring)."""
        return rgb if self.device.type == "cpu" else self.prepare(rgb, resize)

    def _prepared(self, pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
        return self.prepare(pixels) if isinstance(pixels, np.ndarray) else pixels

    # ---- on the worker --------------------------------------------------------------------------------

    def load(self) -> None:
        s = self.settings
        if self.model is None:
            self.model = build_model(s.model, weights=s.weights, device=self.device, image_size=s.image_size,
                                     sha256=s.weights_sha256)
        if self.device.type == "cuda":  # process-wide; the service owns its process
            torch.backends.cuda.enable_cudnn_sdp(s.cudnn_attention)
        if s.host_malloc == "keep" and not keep_freed_memory():  # process-wide too
            log.info("SAM2_HOST_MALLOC=keep has no effect here (the C library is not glibc)")
        if s.compile != "off":
            compile_model(self.model, CompileConfig(s.compile, buckets=self.batch_buckets))
        self.predictor = ImagePredictor(self.model, dtype=self.dtype)
        cfg = self.model.cfg
        self.metrics.model_info.labels(cfg.name, str(self.device), self.dtype_name, str(cfg.image_size)).set(1)
        if s.warmup or s.compile != "off":  # compiled graphs are built here, before /readyz says ready
            t0 = time.perf_counter()
            self.warm_up(full=s.compile != "off")
            log.info("warm-up%s took %.2f s", " (compiling)" if s.compile != "off" else "", time.perf_counter() - t0)

    @property
    def batch_buckets(self) -> tuple[int, ...]:
        """Encoder batch sizes a compiled encoder has graphs for: powers of two up to the largest batch."""
        top = self.settings.max_batch or (8 if self.device.type == "cuda" else 1)
        sizes = [1 << i for i in range(top.bit_length()) if 1 << i < top]
        return (*sizes, top)

    def warm_up(self, full: bool) -> None:
        """One encode and decode; `full`: every encoder batch bucket, the decoder's usual prompt shapes, and a
        tracking session into its steady state (memory full), so that no request waits for a compile."""
        rgb = np.full((64, 64, 3), 127, dtype=np.uint8)
        pixels = self.prepare(rgb)
        feats = self.encode_pixels([pixels])
        click = ObjectGroup([0], np.array([[[32.0, 32.0]]]), np.array([[1]]), None, None)
        self.decode(feats[0], (64, 64), click, True)
        if not full:
            return
        for n in self.batch_buckets[1:]:
            self.encode_pixels([pixels] * n)
        two = ObjectGroup([0, 1], np.array([[[20.0, 20.0], [40.0, 40.0]]] * 2), np.array([[1, 0]] * 2), None, None)
        box = ObjectGroup([0], None, None, np.array([[8.0, 8.0, 56.0, 56.0]]), None)
        for group in (two, box):
            for multimask in (True, False):
                self.decode(feats[0], (64, 64), group, multimask)
        tracker = VideoTracker(self.model, dtype=self.dtype)
        for objects in (1, 2):  # more objects per step compile once more on first use (one graph per bucket)
            state = tracker.new_state(64, 64)
            for obj_id in range(objects):
                tracker.add_prompt(state, obj_id=obj_id, points=[[16 + 32 * obj_id, 32]], labels=[1])
            for _ in range(self.model.cfg.num_maskmem + 2):
                tracker.track(state, rgb)

    def encode(self, images: list[ImageInput]) -> None:
        """Give every image its features: from the cache if another job just made them, else one encoder call
        for all (identical uploads share one slot). New features are cached under the image's tenant."""
        todo: dict[object, list[ImageInput]] = {}
        for image in images:
            if image.content_id is not None and image.tenant is not None:
                entry = self.cache.get(self.cache_key(image.tenant, image.content_id))
                if entry is not None:
                    image.cached = entry
                    continue
            todo.setdefault(image.content_id or id(image), []).append(image)
        if not todo:
            return
        groups = list(todo.values())
        feats = self.encode_pixels([self._prepared(g[0].pixels) for g in groups])
        for i, g in enumerate(groups):
            entry = CachedImage(feats[i], g[0].orig_hw)
            for image in g:
                image.cached, image.pixels = entry, None
                if image.tenant is not None:
                    self.cache.put(self.cache_key(image.tenant, image.image_id), entry)

    @torch.inference_mode()
    def encode_pixels(self, pixels: list[torch.Tensor]) -> ImageFeatures:
        """(3, S, S) inputs -> their float32 features, in one encoder call."""
        x = torch.stack(pixels).to(self.device)  # (B, 3, S, S)
        t0 = time.perf_counter()
        with autocast(self.device, self.dtype):
            feats = self.model.image_features(x)
        feats = feats.to(torch.float32)
        self._sync()
        if self.counting:
            self.metrics.device_seconds.labels("encoder", self.model.cfg.name).observe(time.perf_counter() - t0)
            self.metrics.batch_size.observe(len(pixels))
            self.metrics.encoder_runs.inc(len(pixels))
        return feats

    def segment_group(self, entry: CachedImage, group: ObjectGroup, multimask: bool) -> list[ObjectMasks]:
        """The masks of a group of objects on one image (one decoder call), in the group's order."""
        t0 = time.perf_counter()
        masks = self.decode(entry.features, entry.orig_hw, group, multimask)
        self._sync()
        self.metrics.device_seconds.labels("decoder", self.model.cfg.name).observe(time.perf_counter() - t0)
        return masks

    @torch.inference_mode()
    def decode(
        self, feats: ImageFeatures, orig_hw: tuple[int, int], group: ObjectGroup, multimask: bool
    ) -> list[ObjectMasks]:
        """One decoder call for the group's B objects; masks brought to image size one object at a time."""
        p = self.predictor
        coords, labels = p.prompt_points(group.coords, group.labels, group.boxes, orig_hw)
        mask_in = None if group.mask_logits is None else torch.from_numpy(group.mask_logits).to(self.device)
        with autocast(self.device, self.dtype):
            out = self.model.decode(p.to_decoder_dtype(feats.to(self.device)), coords, labels, mask_in, multimask)
        low_res, iou = out.masks.float(), out.iou_pred.float()  # (B, C, 4s, 4s), (B, C)
        results = []
        for b in range(low_res.shape[0]):
            masks = upscale_masks(low_res[b : b + 1], orig_hw)[0] > p.mask_threshold  # (C, H, W)
            boxes = masks_to_boxes(masks)
            results.append(ObjectMasks(masks.cpu().numpy(), iou[b].cpu().numpy(), boxes.cpu().numpy()))
        return results

    def everything_steps(self, image: ImageInput, params: dict):
        """Segment everything as a generator: one crop encode or one batch of points per next(), reusing the
        image's features; its return value is the records."""
        # points per step bound how long a click waits behind this job; the masks do not depend on it
        step = self.settings.everything_step_points or (64 if self.device.type == "cuda" else 8)
        step = min(params.get("points_per_batch", 64), step)
        amg = AutomaticMaskGenerator(self.model, output_mode="coco_rle", dtype=self.dtype,
                                     **{**params, "points_per_batch": step})
        rgb = image.rgb
        if rgb is None:  # from an image_id without crops: the pixels are never looked at
            h, w = image.orig_hw
            rgb = np.zeros((h, w, 3), dtype=np.uint8)
        records = yield from amg.steps(rgb, features=image.cached.features)
        self.metrics.encoder_runs.inc(amg.images_encoded)
        return records

    def empty_cache(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
