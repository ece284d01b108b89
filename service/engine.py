"""The Engine: one model on one device; requests and tracking frames become jobs of steps (scheduler.py).

Handlers turn requests into jobs and `await` them. The worker thread owns the model and runs the scheduler:
encodes of different requests share one encoder call, decodes of prompt sets on one cached image share one
decoder call, and a segment-everything job runs one batch of points per step, so clicks go first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from model_core import ImageFeatures, ImagePredictor, SAM2Model, build_model
from model_core.automatic_mask_generator import AutomaticMaskGenerator
from model_core.mask_ops import masks_to_boxes
from model_core.precision import autocast, default_dtype, parse_dtype
from model_core.transforms import preprocess, upscale_masks

from . import errors
from .embedding_cache import CachedImage, EmbeddingCache
from .metrics import Metrics
from .scheduler import Job, JobSteps, Overloaded, Scheduler, SchedulerConfig, Step
from .settings import Settings

log = logging.getLogger(__name__)

DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def is_fatal_device_error(exc: BaseException) -> bool:
    """A CUDA error after which the context is unusable (illegal address, device-side assert, ECC); not OOM."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return False
    return isinstance(exc, getattr(torch, "AcceleratorError", ())) or "CUDA error" in str(exc)


def resolve_device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---- what handlers hand to the engine --------------------------------------------------------------------


@dataclass
class ImageInput:
    """One image for a job: either its cached features, or its pixels ready for the encoder."""

    image_id: str
    orig_hw: tuple[int, int]
    cached: CachedImage | None = None
    pixels: torch.Tensor | None = None  # (3, S, S) normalised, from Engine.prepare
    rgb: np.ndarray | None = None  # kept only when segment-everything crops need the pixels
    content_id: str | None = None  # sha256 of the bytes: identical uploads share one encoder slot


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
    scores: np.ndarray  # (C,)
    boxes: np.ndarray  # (C, 4) xyxy, inclusive max




class Engine:
    """Owns the model; `start()` loads and warms it on the worker thread; `await segment(...)` etc. use it."""

    def __init__(self, settings: Settings, model: SAM2Model | None = None, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.device = resolve_device(settings.device) if model is None else model.device
        self.dtype = parse_dtype(settings.dtype) if settings.dtype else default_dtype(self.device)
        self.model: SAM2Model | None = model
        self.cache = EmbeddingCache(settings.cache_bytes, on_change=self.metrics.cache_bytes.set)
        self.scheduler = Scheduler(
            {"encode": self._run_encode, "decode": self._run_decode, "call": self._run_calls,
             "track": self._run_calls, "everything": self._run_everything},
            SchedulerConfig(max_batch=settings.max_batch, max_wait_s=settings.max_wait_ms / 1000.0,
                            aging_s=settings.priority_aging_ms / 1000.0, max_jobs=settings.queue_size),
            self.metrics, is_oom=lambda exc: isinstance(exc, torch.cuda.OutOfMemoryError), on_oom=self._empty_cache,
        )
        self._ready = threading.Event()
        self._loaded = threading.Event()  # set when loading ended, ready or failed
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None  # loading failed
        self.device_error: BaseException | None = None  # a CUDA error that left the device unusable
        self.heartbeat = 0.0  # time.monotonic() of the worker loop's last turn (/healthz)

    # ---- life cycle -------------------------------------------------------------------------------

    def start(self) -> "Engine":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sam2-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._fail_pending()

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and not self._stopped.is_set() and self.device_error is None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the model is ready (True) or failed to load or `timeout` passed (False)."""
        self._loaded.wait(timeout)
        return self.ready

    @property
    def model_key(self) -> str:
        """The model's identity in cache keys: name and input size (features differ for either)."""
        if self.model is not None:
            return f"{self.model.cfg.name}@{self.model.image_size}"
        return f"{self.settings.model}@{self.settings.image_size}"

    @property
    def mask_input_size(self) -> int:
        """Side of the low-resolution mask prompt (4x the embedding side: 256 at 1024 px)."""
        return self.model.sam_prompt_encoder.mask_input_size[0]

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES.get(self.dtype, str(self.dtype))

    # ---- for handlers (event loop) ----------------------------------------------------------------

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
        return preprocess(rgb, self._image_size(), self.device, resize)

    async def embed(self, image: ImageInput, cache_key: tuple) -> CachedImage:
        return await self._submit("embed", self._features(image, cache_key))

    async def segment(
        self, image: ImageInput, cache_key: tuple, groups: list[ObjectGroup], multimask: bool
    ) -> list[ObjectMasks]:
        return await self._submit("segment", self._segment_job(image, cache_key, groups, multimask))

    async def everything(self, image: ImageInput, cache_key: tuple, params: dict) -> list[dict]:
        return await self._submit("everything", self._everything_job(image, cache_key, params),
                                  self.settings.everything_timeout)

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run fn() on the worker thread as an interactive step (a tracking session's prompt, removal, reset)."""
        return await self._submit("call", self._single_step("call", fn))

    async def track(self, fn: Callable[[], Any]) -> Any:
        """Run fn() (one tracking frame) on the worker thread, at the tracking frames' priority."""
        return await self._submit("track", self._single_step("track", fn))

    async def _submit(self, label: str, steps: JobSteps, timeout: float | None = None) -> Any:
        """Queue a job and await it; it is dropped between steps past its deadline or when its client leaves."""
        s = self.settings
        if not self.ready:
            steps.close()
            raise errors.not_ready(self.status_detail(), s.retry_after)
        timeout = s.request_timeout if timeout is None else timeout

        def expired(job: Job) -> BaseException:
            return errors.queue_timeout(f"the {label} did not finish within {timeout:g} s", s.retry_after)

        job = Job(steps, time.monotonic() + timeout, label, expired)
        try:
            self.scheduler.submit(job)
        except Overloaded:
            steps.close()
            raise errors.overloaded(f"the queue is full ({s.queue_size} jobs waiting); retry later", s.retry_after) \
                from None
        job.future.add_done_callback(self._note_device_failure)
        return await asyncio.wrap_future(job.future)  # cancelling this (client gone) cancels the job's steps

    def _note_device_failure(self, future: concurrent.futures.Future) -> None:
        exc = None if future.cancelled() else future.exception()
        if exc is not None and is_fatal_device_error(exc):
            self.device_error = exc

    def status_detail(self) -> str:
        if self.error is not None:
            return f"the model failed to load: {self.error}"
        if self.device_error is not None:
            return f"the device failed: {self.device_error}"
        if self._stopped.is_set():
            return "the engine is shutting down"
        return "the model is loading and warming up"

    # ---- the worker thread ------------------------------------------------------------------------

    def _image_size(self) -> int:
        if self.model is not None:
            return self.model.image_size
        from model_core import get_config

        return get_config(self.settings.model, self.settings.image_size).image_size

    def _run(self) -> None:
        try:
            self._load()
        except BaseException as exc:  # noqa: BLE001 - reported through /readyz and /healthz
            log.exception("loading the model failed")
            self.error = exc
            self._loaded.set()
            return
        self._ready.set()
        self._loaded.set()
        log.info("engine ready: %s on %s, %s", self.model.cfg.name, self.device, self.dtype_name)
        while not self._stopped.is_set():
            self.heartbeat = time.monotonic()
            try:
                self.scheduler.tick(idle_wait=0.1)
            except BaseException:  # noqa: BLE001 - never let the worker die
                log.exception("engine step failed")

    def _load(self) -> None:
        s = self.settings
        if self.model is None:
            self.model = build_model(s.model, weights=s.weights, device=self.device, image_size=s.image_size,
                                     sha256=s.weights_sha256)
        if self.device.type == "cuda":  # process-wide; the service owns its process
            torch.backends.cuda.enable_cudnn_sdp(s.cudnn_attention)
        self.predictor = ImagePredictor(self.model, dtype=self.dtype)
        cfg = self.model.cfg
        self.metrics.model_info.labels(cfg.name, str(self.device), self.dtype_name, str(cfg.image_size)).set(1)
        if s.warmup:
            t0 = time.perf_counter()
            rgb = np.full((64, 64, 3), 127, dtype=np.uint8)
            feats = self._encode_batch([self.prepare(rgb)])
            group = ObjectGroup([0], np.array([[[32.0, 32.0]]]), np.array([[1]]), None, None)
            self._decode(feats[0], (64, 64), group, True)
            log.info("warm-up took %.2f s", time.perf_counter() - t0)

    # ---- jobs: generators of steps (run on the worker thread) ---------------------------------------

    def _features(self, image: ImageInput, cache_key: tuple | None) -> JobSteps:
        if image.cached is None:
            image.cached = yield Step("encode", (image, cache_key), key="image")
            image.pixels = None
        return image.cached

    def _segment_job(self, image: ImageInput, cache_key, groups: list[ObjectGroup], multimask: bool) -> JobSteps:
        entry = yield from self._features(image, cache_key)
        out: list[ObjectMasks | None] = [None] * sum(len(g) for g in groups)
        for group in groups:
            masks = yield Step("decode", (entry, group, multimask), key=_decode_key(entry, group, multimask))
            for idx, m in zip(group.indices, masks):
                out[idx] = m
        return out

    def _everything_job(self, image: ImageInput, cache_key, params: dict) -> JobSteps:
        yield from self._features(image, cache_key)
        batches = self._everything_steps(image, params)
        while True:
            done, value = yield Step("everything", batches)
            if done:
                return value

    @staticmethod
    def _single_step(kind: str, fn: Callable[[], Any]) -> JobSteps:
        return (yield Step(kind, fn))

    # ---- step runners: payloads of one kind -> one result (or exception) each ------------------------

    def _run_encode(self, payloads: list[tuple[ImageInput, tuple | None]]) -> list[CachedImage]:
        """Features per image: from the cache if an identical upload has them, else one encoder call for all."""
        out: list[CachedImage | None] = [None] * len(payloads)
        todo: dict[Any, list[int]] = {}
        for i, (image, cache_key) in enumerate(payloads):
            if image.content_id is not None and cache_key is not None:
                entry = self.cache.get(self._content_key(cache_key, image.content_id))
                if entry is not None:
                    out[i] = entry
                    continue
            todo.setdefault(image.content_id or ("upload", i), []).append(i)
        if todo:
            groups = list(todo.values())
            feats = self._encode_batch([payloads[g[0]][0].pixels for g in groups])
            for k, g in enumerate(groups):
                entry = CachedImage(feats[k], payloads[g[0]][0].orig_hw)
                for i in g:
                    out[i] = entry
                    if payloads[i][1] is not None:
                        self.cache.put(payloads[i][1], entry)
        return out

    @staticmethod
    def _content_key(cache_key: tuple, image_id: str) -> tuple:
        model_key, tenant, _ = cache_key
        return (model_key, tenant, image_id)

    def _run_decode(self, payloads: list[tuple[CachedImage, ObjectGroup, bool]]) -> list[list[ObjectMasks]]:
        """Prompt sets of several requests on one image with the same shape: one decoder call, split after."""
        entry, _, multimask = payloads[0]
        group = payloads[0][1] if len(payloads) == 1 else _concat_groups([p[1] for p in payloads])
        t0 = time.perf_counter()
        masks = self._decode(entry.features, entry.orig_hw, group, multimask)
        self._sync()
        self.metrics.device_seconds.labels("decoder", self.model.cfg.name).observe(time.perf_counter() - t0)
        out, start = [], 0
        for _, g, _ in payloads:
            out.append(masks[start : start + len(g)])
            start += len(g)
        return out

    @staticmethod
    def _run_calls(fns: list[Callable[[], Any]]) -> list[Any]:
        """Each call once; a failing call fails only its own job (calls change state: never re-run)."""
        results = []
        for fn in fns:
            try:
                results.append(fn())
            except Exception as exc:  # noqa: BLE001
                results.append(exc)
        return results

    def _run_everything(self, batches: list) -> list[Any]:
        """One batch of points for each segment-everything job: (done, records)."""
        results = []
        for gen in batches:
            t0 = time.perf_counter()
            try:
                next(gen)
                results.append((False, None))
            except StopIteration as stop:
                results.append((True, stop.value))
            except Exception as exc:  # noqa: BLE001
                results.append(exc)
            self.metrics.device_seconds.labels("amg", self.model.cfg.name).observe(time.perf_counter() - t0)
        return results

    def _empty_cache(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @torch.inference_mode()
    def _encode_batch(self, pixels: list[torch.Tensor]) -> ImageFeatures:
        x = torch.stack(pixels).to(self.device)  # (B, 3, S, S)
        t0 = time.perf_counter()
        with autocast(self.device, self.dtype):
            feats = self.model.image_features(x)
        feats = feats.to(torch.float32)
        self._sync()
        if self._ready.is_set():  # warm-up is not traffic
            self.metrics.device_seconds.labels("encoder", self.model.cfg.name).observe(time.perf_counter() - t0)
            self.metrics.batch_size.observe(len(pixels))
            self.metrics.encoder_runs.inc(len(pixels))
        return feats

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def _decode(
        self, feats: ImageFeatures, orig_hw: tuple[int, int], group: ObjectGroup, multimask: bool
    ) -> list[ObjectMasks]:
        """One decoder call for the group's B objects; masks brought to image size one object at a time."""
        p = self.predictor
        coords, labels = p.prompt_points(group.coords, group.labels, group.boxes, orig_hw)
        mask_in = None if group.mask_logits is None else torch.from_numpy(group.mask_logits).to(self.device)
        with autocast(self.device, self.dtype):
            out = self.model.decode(p.compute_features(feats.to(self.device)), coords, labels, mask_in, multimask)
        low_res, iou = out.masks.float(), out.iou_pred.float()  # (B, C, 4s, 4s), (B, C)
        results = []
        for b in range(low_res.shape[0]):
            masks = upscale_masks(low_res[b : b + 1], orig_hw)[0] > p.mask_threshold  # (C, H, W)
            boxes = masks_to_boxes(masks)
            results.append(ObjectMasks(masks.cpu().numpy(), iou[b].cpu().numpy(), boxes.cpu().numpy()))
        return results

    def _everything_steps(self, image: ImageInput, params: dict):
        """The segment-everything job as a generator: one batch of points (or one crop's encode) per next()."""
        amg = AutomaticMaskGenerator(self.model, output_mode="coco_rle", dtype=self.dtype, **params)
        old = amg.predictor
        amg.predictor = _FeatureReusingPredictor(
            self.model, image.cached, on_encode=self._count_crop_encode, mask_threshold=old.mask_threshold,
            max_hole_area=old.max_hole_area, max_sprinkle_area=old.max_sprinkle_area, dtype=old.dtype,
        )
        rgb = image.rgb
        if rgb is None:  # from an image_id without crops: the pixels are never looked at
            h, w = image.orig_hw
            rgb = np.zeros((h, w, 3), dtype=np.uint8)
        return amg.steps(rgb)

    def _count_crop_encode(self) -> None:
        self.metrics.encoder_runs.inc()

    def _fail_pending(self) -> None:
        self.scheduler.fail_all(lambda: errors.not_ready("the engine is shutting down", self.settings.retry_after))


def _decode_key(entry: CachedImage, group: ObjectGroup, multimask: bool) -> tuple:
    """Decodes share a call only on the same features with the same prompt shape."""
    shape = lambda a: None if a is None else a.shape[1:]  # noqa: E731
    return (id(entry), shape(group.coords), group.boxes is not None, shape(group.mask_logits), multimask)


def _concat_groups(groups: list[ObjectGroup]) -> ObjectGroup:
    cat = lambda arrays: None if arrays[0] is None else np.concatenate(arrays)  # noqa: E731
    return ObjectGroup(
        [i for g in groups for i in g.indices], cat([g.coords for g in groups]), cat([g.labels for g in groups]),
        cat([g.boxes for g in groups]), cat([g.mask_logits for g in groups]),
    )


class _FeatureReusingPredictor(ImagePredictor):
    """An ImagePredictor that answers `set_image(full image)` from cached features; crops are encoded."""

    def __init__(self, model: SAM2Model, cached: CachedImage, on_encode: Callable[[], None], **kwargs) -> None:
        super().__init__(model, **kwargs)
        self._cached = cached
        self._on_encode = on_encode

    def set_image(self, image) -> None:
        if tuple(image.shape[:2]) == tuple(self._cached.orig_hw):
            self.set_features(self._cached.features, [self._cached.orig_hw])
        else:
            self._on_encode()
            super().set_image(image)
