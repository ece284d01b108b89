"""The Engine's loop: a bounded queue, batches collected until `max_batch` or `max_wait_ms`, futures.

collect -> run -> hand back. Handlers `await` jobs; one worker thread takes a job, gathers the jobs that
arrive within `max_wait_ms` of the oldest one needing the encoder, encodes all their new images in one
call, then runs each job. What a job runs is model work (`model_work.ModelWork`); this file holds none.
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

from model_core import SAM2Model

from .embedding_cache import CachedImage
from .engine_errors import EngineError, NotReady, Overloaded, QueueTimeout
from .metrics import Metrics
from .model_work import ImageInput, ModelWork, ObjectGroup, ObjectMasks, resolve_device
from .settings import Settings

log = logging.getLogger(__name__)

__all__ = ["Engine", "EngineError", "ImageInput", "Job", "ObjectGroup", "ObjectMasks", "resolve_device"]


@dataclass
class Job:
    """What to run on the worker (`run()`), after `image` (if any) has its features."""

    run: Callable[[], Any]
    image: ImageInput | None = None
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def needs_encoder(self) -> bool:
        return self.image is not None and self.image.needs_encoder


class Engine:
    """Owns the worker thread; `start()` loads and warms the model on it; `await segment(...)` etc. use it."""

    def __init__(self, settings: Settings, model: SAM2Model | None = None, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.work = ModelWork(settings, model, self.metrics)
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=settings.queue_size)
        self._ready = threading.Event()
        self._loaded = threading.Event()  # set when loading ended, ready or failed
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

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

    def prepare(self, rgb):
        return self.work.prepare(rgb)

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
        return self._ready.is_set() and not self._stopped.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the model is ready (True) or failed to load or `timeout` passed (False)."""
        self._loaded.wait(timeout)
        return self.ready

    def status_detail(self) -> str:
        if self.error is not None:
            return f"the model failed to load: {self.error}"
        if self._stopped.is_set():
            return "the engine is shutting down"
        return "the model is loading and warming up"

    # ---- jobs (event loop) ------------------------------------------------------------------------

    async def embed(self, image: ImageInput, tenant: str) -> CachedImage:
        image.tenant = tenant
        return await self.submit(Job(lambda: image.cached, image))

    async def segment(self, image: ImageInput, tenant: str, groups: list[ObjectGroup], multimask: bool
                      ) -> list[ObjectMasks]:
        image.tenant = tenant
        return await self.submit(Job(lambda: self.work.segment(image, groups, multimask), image))

    async def everything(self, image: ImageInput, tenant: str, params: dict) -> list[dict]:
        image.tenant = tenant
        return await self.submit(Job(lambda: self.work.everything(image, params), image))

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run fn() on the worker thread, in queue order with the other jobs (tracking steps use this)."""
        return await self.submit(Job(fn))

    async def submit(self, job: Job) -> Any:
        s = self.settings
        if not self.ready:
            raise NotReady(self.status_detail(), s.retry_after)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Overloaded(f"the queue is full ({s.queue_size} jobs waiting); retry later", s.retry_after) from None
        self.metrics.queue_depth.set(self._queue.qsize())
        waiter = asyncio.wrap_future(job.future)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout=s.request_timeout)
        except TimeoutError:
            if job.future.cancel():  # still queued: give up on it
                raise QueueTimeout(f"waited {s.request_timeout:g} s in the queue without reaching the model",
                                   s.retry_after) from None
            return await waiter  # already on the model: it finishes shortly
        except asyncio.CancelledError:  # the client went away
            job.future.cancel()
            raise

    # ---- the worker thread: collect -> run -> hand back ------------------------------------------

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
                job.future.set_exception(QueueTimeout(f"waited {now - job.enqueued:.1f} s in the queue",
                                                      self.settings.retry_after))
                continue
            live.append(job)
        encoding = [j for j in live if j.needs_encoder]
        if encoding:
            try:
                self.work.encode([j.image for j in encoding])
            except BaseException as exc:  # noqa: BLE001 - those jobs fail, the others run
                log.exception("image encoder failed")
                for job in encoding:
                    job.future.set_exception(exc)
        for job in live:
            if job.future.done():
                continue
            try:
                job.future.set_result(job.run())
            except BaseException as exc:  # noqa: BLE001 - the job fails, the worker goes on
                if not isinstance(exc, EngineError):
                    log.exception("job failed")
                job.future.set_exception(exc)

    def _fail_pending(self) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(NotReady("the engine is shutting down", self.settings.retry_after))
