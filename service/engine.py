"""The Engine: one model on one device, fed by a bounded queue, with image-encoder work batched across requests.

Handlers turn requests into jobs and `await` them. One worker thread owns the model: it takes a job,
gathers up to `max_batch` jobs that arrived within `max_wait_ms` of the oldest one needing the encoder,
encodes all their new images in one call under the configured precision, then decodes each job's prompts
(all objects of a request with the same prompt shape in one decoder call).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
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


@dataclass
class Job:
    kind: str  # "embed" | "segment" | "everything" | "call"
    image: ImageInput | None
    cache_key: tuple | None  # where the new features are stored (None: do not store)
    payload: Any = None
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def needs_encoder(self) -> bool:
        return self.image is not None and self.image.cached is None


_STOP = object()


class Engine:
    """Owns the model; `start()` loads and warms it on the worker thread; `await segment(...)` etc. use it."""

    def __init__(self, settings: Settings, model: SAM2Model | None = None, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.device = resolve_device(settings.device) if model is None else model.device
        self.dtype = parse_dtype(settings.dtype) if settings.dtype else default_dtype(self.device)
        self.model: SAM2Model | None = model
        self.cache = EmbeddingCache(settings.cache_bytes, on_change=self.metrics.cache_bytes.set)
        self._queue: queue.Queue = queue.Queue(maxsize=settings.queue_size)
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

    def prepare(self, rgb: np.ndarray) -> torch.Tensor:
        """HWC RGB uint8 -> the encoder's (3, S, S) input; runs in a handler's thread, not the worker."""
        return preprocess(rgb, self._image_size(), self.device)

    async def embed(self, image: ImageInput, cache_key: tuple) -> CachedImage:
        return await self._submit(Job("embed", image, cache_key))

    async def segment(
        self, image: ImageInput, cache_key: tuple, groups: list[ObjectGroup], multimask: bool
    ) -> list[ObjectMasks]:
        return await self._submit(Job("segment", image, cache_key, (groups, multimask)))

    async def everything(self, image: ImageInput, cache_key: tuple, params: dict) -> list[dict]:
        return await self._submit(Job("everything", image, cache_key, params))

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run fn() on the worker thread, in queue order with the other jobs (tracking steps use this)."""
        return await self._submit(Job("call", None, None, fn))

    async def _submit(self, job: Job) -> Any:
        s = self.settings
        if not self.ready:
            raise errors.not_ready(self.status_detail(), s.retry_after)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise errors.overloaded(f"the queue is full ({s.queue_size} jobs waiting); retry later", s.retry_after) \
                from None
        self.metrics.queue_depth.set(self._queue.qsize())
        job.future.add_done_callback(self._note_device_failure)
        waiter = asyncio.wrap_future(job.future)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout=s.request_timeout)
        except TimeoutError:
            if job.future.cancel():  # still queued: give up on it
                raise errors.queue_timeout(
                    f"waited {s.request_timeout:g} s in the queue without reaching the model", s.retry_after
                ) from None
            return await waiter  # already on the model: it finishes shortly
        except asyncio.CancelledError:  # the client went away
            job.future.cancel()
            raise

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
                first = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            batch = self._collect(first)
            self.metrics.queue_depth.set(self._queue.qsize())
            try:
                self._process(batch)
            except BaseException as exc:  # noqa: BLE001 - never let the worker die
                log.exception("engine batch failed")
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)

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

    def _collect(self, first: Job) -> list[Job]:
        """`first` plus jobs already queued or arriving before the oldest encoder job waited max_wait_ms."""
        batch = [first]
        wait = self.settings.max_wait_ms / 1000.0
        while len(batch) < self.settings.max_batch:
            enc = [j.enqueued for j in batch if j.needs_encoder]
            remaining = (min(enc) + wait - time.monotonic()) if enc else 0.0
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            batch.append(job)
        return batch

    def _process(self, batch: list[Job]) -> None:
        now = time.monotonic()
        live = []
        for job in batch:
            self.metrics.queue_wait.observe(now - job.enqueued)
            if not job.future.set_running_or_notify_cancel():
                continue  # its handler gave up
            if now - job.enqueued > self.settings.request_timeout:
                job.future.set_exception(errors.queue_timeout(
                    f"waited {now - job.enqueued:.1f} s in the queue", self.settings.retry_after))
                continue
            live.append(job)
        self._encode_jobs([j for j in live if j.needs_encoder])
        for job in live:
            if job.future.done():
                continue
            try:
                job.future.set_result(self._finish(job))
            except BaseException as exc:  # noqa: BLE001 - the job fails, the worker goes on
                if not isinstance(exc, errors.Problem):
                    log.exception("%s job failed", job.kind)
                job.future.set_exception(exc)

    def _encode_jobs(self, jobs: list[Job]) -> None:
        """Give every job its features: from the cache if another job just made them, else one encoder call."""
        todo: dict[Any, list[Job]] = {}
        for job in jobs:
            ident = job.image.content_id or id(job)
            if job.image.content_id is not None:
                entry = self.cache.get(self.cache_key_of(job, job.image.content_id))
                if entry is not None:
                    job.image.cached = entry
                    continue
            todo.setdefault(ident, []).append(job)
        if not todo:
            return
        groups = list(todo.values())
        try:
            feats = self._encode_batch([g[0].image.pixels for g in groups])
        except BaseException as exc:  # noqa: BLE001
            log.exception("image encoder failed")
            for g in groups:
                for job in g:
                    job.future.set_exception(exc)
            return
        for i, g in enumerate(groups):
            entry = CachedImage(feats[i], g[0].image.orig_hw)
            for job in g:
                job.image.cached = entry
                job.image.pixels = None
                if job.cache_key is not None:
                    self.cache.put(job.cache_key, entry)

    @staticmethod
    def cache_key_of(job: Job, image_id: str) -> tuple:
        model_key, tenant, _ = job.cache_key
        return (model_key, tenant, image_id)

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

    def _finish(self, job: Job) -> Any:
        if job.kind == "call":
            return job.payload()
        entry = job.image.cached
        if job.kind == "embed":
            return entry
        if job.kind == "segment":
            groups, multimask = job.payload
            out: list[ObjectMasks | None] = [None] * sum(len(g) for g in groups)
            t0 = time.perf_counter()
            for group in groups:
                for idx, masks in zip(group.indices, self._decode(entry.features, entry.orig_hw, group, multimask)):
                    out[idx] = masks
            self._sync()
            self.metrics.device_seconds.labels("decoder", self.model.cfg.name).observe(time.perf_counter() - t0)
            return out
        if job.kind == "everything":
            t0 = time.perf_counter()
            records = self._everything(job.image, job.payload)
            self.metrics.device_seconds.labels("amg", self.model.cfg.name).observe(time.perf_counter() - t0)
            return records
        raise ValueError(f"unknown job kind {job.kind!r}")

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

    def _everything(self, image: ImageInput, params: dict) -> list[dict]:
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
        return amg.generate(rgb)

    def _count_crop_encode(self) -> None:
        self.metrics.encoder_runs.inc()

    def _fail_pending(self) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(errors.not_ready("the engine is shutting down", self.settings.retry_after))


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
