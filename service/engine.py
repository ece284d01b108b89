"""The Engine: requests and tracking frames become jobs of steps, run by priority on one worker thread.

A job is a generator that yields `Step`s (scheduler.py) and gets each step's result back: an encode (batched
across requests), a decode (batched across requests on one image), one batch of points of a segment-everything
job, a tracking frame, a tracking session's prompt. What a step runs is model work (`model_work.ModelWork`);
this file holds the jobs, the step runners and the worker's life cycle.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from typing import Any, Callable

import numpy as np
import torch

from model_core import SAM2Model
from model_core.transforms import preprocess

from . import scheduler as sched
from .embedding_cache import CachedImage
from .engine_errors import EngineError, NotReady, Overloaded, QueueTimeout
from .metrics import Metrics
from .model_work import ImageInput, ModelWork, ObjectGroup, ObjectMasks
from .scheduler import Job, JobSteps, Scheduler, SchedulerConfig, Step
from .settings import Settings

log = logging.getLogger(__name__)

__all__ = ["Engine", "EngineError", "ImageInput", "ObjectGroup", "ObjectMasks"]


def is_fatal_device_error(exc: BaseException) -> bool:
    """A CUDA error after which the context is unusable (illegal address, device-side assert, ECC); not OOM."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return False
    return isinstance(exc, getattr(torch, "AcceleratorError", ())) or "CUDA error" in str(exc)


class Engine:
    """Owns the worker thread; `start()` loads and warms the model on it; `await segment(...)` etc. use it."""

    def __init__(self, settings: Settings, model: SAM2Model | None = None, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.work = ModelWork(settings, model, self.metrics)
        self.scheduler = Scheduler(
            {"encode": self._run_encode, "decode": self._run_decode, "call": _run_calls, "track": _run_track,
             "everything": self._run_everything},
            SchedulerConfig(max_batch=settings.track_batch,
                            encode_batch=settings.max_batch or (8 if self.work.device.type == "cuda" else 1),
                            max_wait_s=settings.max_wait_ms / 1000.0,
                            aging_s=settings.priority_aging_ms / 1000.0, max_jobs=settings.queue_size),
            self.metrics, is_oom=lambda exc: isinstance(exc, torch.cuda.OutOfMemoryError),
            on_oom=self.work.empty_cache,
        )
        self._ready = threading.Event()
        self._loaded = threading.Event()  # set when loading ended, ready or failed
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None  # loading failed
        self.device_error: BaseException | None = None  # a CUDA error that left the device unusable
        self.heartbeat = 0.0  # time.monotonic() of the worker loop's last turn (/healthz)

    # what handlers read of the model work
    model = property(lambda self: self.work.model)
    device = property(lambda self: self.work.device)
    dtype = property(lambda self: self.work.dtype)
    dtype_name = property(lambda self: self.work.dtype_name)
    cache = property(lambda self: self.work.cache)
    model_key = property(lambda self: self.work.model_key)
    mask_input_size = property(lambda self: self.work.mask_input_size)

    def lookup(self, tenant: str, image_id: str) -> CachedImage | None:
        return self.work.lookup(tenant, image_id)

    def remember(self, tenant: str, image_id: str, entry: CachedImage) -> None:
        """Cache features under another id of the same image (an `image_id` the client chose)."""
        self.cache.put(self.work.cache_key(tenant, image_id), entry)

    def prepare(self, rgb: np.ndarray, resize: str = "bilinear") -> torch.Tensor:
        return self.work.prepare(rgb, resize)

    def encoder_input(self, rgb: np.ndarray, resize: str = "bilinear") -> torch.Tensor | np.ndarray:
        return self.work.encoder_input(rgb, resize)

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
        self.scheduler.fail_all(lambda: NotReady("the engine is shutting down", self.settings.retry_after))

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and not self._stopped.is_set() and self.device_error is None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the model is ready (True) or failed to load or `timeout` passed (False)."""
        self._loaded.wait(timeout)
        return self.ready

    def status_detail(self) -> str:
        if self.error is not None:
            return f"the model failed to load: {self.error}"
        if self.device_error is not None:
            return f"the device failed: {self.device_error}"
        if self._stopped.is_set():
            return "the engine is shutting down"
        return "the model is loading and warming up"

    # ---- jobs (event loop) ------------------------------------------------------------------------

    async def embed(self, image: ImageInput, tenant: str) -> CachedImage:
        image.tenant = tenant
        return await self.submit("embed", self._features(image))

    async def segment(self, image: ImageInput, tenant: str, groups: list[ObjectGroup], multimask: bool
                      ) -> list[ObjectMasks]:
        image.tenant = tenant
        return await self.submit("segment", self._segment_job(image, groups, multimask))

    async def everything(self, image: ImageInput, tenant: str | None, params: dict) -> list[dict]:
        image.tenant = tenant
        return await self.submit("segment-everything", self._everything_job(image, params),
                                 self.settings.everything_timeout)

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run fn() on the worker as an interactive step (a tracking session's prompt, removal, reset)."""
        return await self.submit("call", _single_step("call", fn))

    async def track(self, tracker, state, x: torch.Tensor, before: Callable[[], None] | None = None):
        """One tracking frame (x: (3, S, S) from `prepare`) of a session; frames of concurrent sessions are
        tracked together (`VideoTracker.track_batch`). `before()` runs on the worker in the same step, just
        before the frame (a session's first frame applies its waiting prompts): a job refused or dropped
        before its step changes nothing."""
        return await self.submit("tracking frame", _single_step("track", (tracker, state, x, before),
                                                                key=id(tracker)))

    async def submit(self, label: str, steps: JobSteps, timeout: float | None = None) -> Any:
        """Queue a job and await it; it is dropped between steps past its deadline or when its client leaves."""
        s = self.settings
        if not self.ready:
            steps.close()
            raise NotReady(self.status_detail(), s.retry_after)
        timeout = s.request_timeout if timeout is None else timeout

        def expired(job: Job) -> BaseException:
            return QueueTimeout(f"the {label} did not finish within {timeout:g} s", s.retry_after)

        job = Job(steps, time.monotonic() + timeout, label, expired)
        try:
            self.scheduler.submit(job)
        except sched.Overloaded:
            steps.close()
            raise Overloaded(f"the queue is full ({s.queue_size} jobs waiting); retry later", s.retry_after) from None
        job.future.add_done_callback(self._note_device_failure)
        return await asyncio.wrap_future(job.future)  # cancelled here (client gone): the job's steps stop

    def _note_device_failure(self, future: concurrent.futures.Future) -> None:
        exc = None if future.cancelled() else future.exception()
        if exc is not None and is_fatal_device_error(exc):
            self.device_error = exc

    # ---- jobs: generators of steps (run on the worker thread) ---------------------------------------

    def _features(self, image: ImageInput) -> JobSteps:
        if image.needs_encoder:
            yield Step("encode", image, key="image")
        return image.cached

    def _segment_job(self, image: ImageInput, groups: list[ObjectGroup], multimask: bool) -> JobSteps:
        entry = yield from self._features(image)
        out: list[ObjectMasks | None] = [None] * sum(len(g) for g in groups)
        for group in groups:
            masks = yield Step("decode", (entry, group, multimask), key=_decode_key(entry, group, multimask))
            for idx, m in zip(group.indices, masks):
                out[idx] = m
        return out

    def _everything_job(self, image: ImageInput, params: dict) -> JobSteps:
        yield from self._features(image)
        batches = self.work.everything_steps(image, params)
        while True:
            done, value = yield Step("everything", batches)
            if done:
                return value

    # ---- step runners: payloads of one kind -> one result (or exception) each ------------------------

    def _run_encode(self, images: list[ImageInput]) -> list[None]:
        self.work.encode(images)
        return [None] * len(images)

    def _run_decode(self, payloads: list[tuple[CachedImage, ObjectGroup, bool]]) -> list[list[ObjectMasks]]:
        """Prompt sets of several requests on one image with one prompt shape: one decoder call, split after."""
        entry, _, multimask = payloads[0]
        groups = [g for _, g, _ in payloads]
        masks = self.work.segment_group(entry, groups[0] if len(groups) == 1 else _concat_groups(groups), multimask)
        out, start = [], 0
        for g in groups:
            out.append(masks[start : start + len(g)])
            start += len(g)
        return out

    def _run_everything(self, batches: list) -> list[Any]:
        """One batch of points of each segment-everything job: (done, records) each."""
        results = []
        for gen in batches:
            t0 = time.perf_counter()
            try:
                with torch.inference_mode():
                    next(gen)
                results.append((False, None))
            except StopIteration as stop:
                results.append((True, stop.value))
            except Exception as exc:  # noqa: BLE001 - a generator that raised is finished: never re-run
                results.append(exc)
            self.metrics.device_seconds.labels("amg", self.model.cfg.name).observe(time.perf_counter() - t0)
        return results

    # ---- the worker thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self.work.load()
        except BaseException as exc:  # noqa: BLE001 - reported through /readyz and /healthz
            log.exception("loading the model failed")
            self.error = exc
            self._loaded.set()
            return
        self.work.counting = True
        self._ready.set()
        self._loaded.set()
        log.info("engine ready: %s on %s, %s", self.model.cfg.name, self.device, self.dtype_name)
        while not self._stopped.is_set():
            self.heartbeat = time.monotonic()
            try:
                self.scheduler.tick(idle_wait=0.1)
            except BaseException:  # noqa: BLE001 - never let the worker die
                log.exception("engine step failed")


def _single_step(kind: str, payload: Any, key: Any = None) -> JobSteps:
    return (yield Step(kind, payload, key))


def _run_track(payloads: list[tuple]) -> list[Any]:
    """Sessions' frames in one tracking batch; a failure fails them all (their states may have moved: no re-run).
    A session whose frame cannot be prepared (on the CPU frames come as images: `ModelWork.encoder_input`) or
    whose `before` fails fails alone, without its frame."""
    tracker = payloads[0][0]
    results: list[Any] = [None] * len(payloads)
    ready, inputs = [], []
    for i, (_, _, x, before) in enumerate(payloads):
        try:
            if isinstance(x, np.ndarray):  # before `before`, which changes the session's state
                x = preprocess(x, tracker.cfg.image_size, tracker.device, tracker.resize)
            if before is not None:
                before()
            ready.append(i)
            inputs.append(x)
        except Exception as exc:  # noqa: BLE001
            results[i] = exc
    if ready:
        try:
            out = tracker.track_batch([payloads[i][1] for i in ready], inputs)
        except Exception as exc:  # noqa: BLE001
            out = [exc] * len(ready)
        for i, r in zip(ready, out):
            results[i] = r
    return results


def _run_calls(fns: list[Callable[[], Any]]) -> list[Any]:
    """Each call once; a failing call fails only its own job (calls change state: never re-run)."""
    results = []
    for fn in fns:
        try:
            results.append(fn())
        except Exception as exc:  # noqa: BLE001
            results.append(exc)
    return results


def _decode_key(entry: CachedImage, group: ObjectGroup, multimask: bool) -> tuple:
    """Decodes share a call only on the same features with the same prompt shape."""
    def shape(a):
        return None if a is None else a.shape[1:]
    return (id(entry), shape(group.coords), group.boxes is not None, shape(group.mask_logits), multimask)


def _concat_groups(groups: list[ObjectGroup]) -> ObjectGroup:
    def cat(arrays):
        return None if arrays[0] is None else np.concatenate(arrays)
    return ObjectGroup([i for g in groups for i in g.indices], cat([g.coords for g in groups]),
                       cat([g.labels for g in groups]), cat([g.boxes for g in groups]),
                       cat([g.mask_logits for g in groups]))
