"""The worker loop: jobs are generators of steps; each tick picks one step kind by priority (aged by waiting),
runs the pending steps of that kind from different jobs as one batch, and sends each job its share.

A job's generator yields `Step`s and receives each step's result (or has the step's exception thrown into it);
its return value resolves the job's future. Everything here runs on the one worker thread that owns the model.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Hashable

log = logging.getLogger(__name__)

# Step kinds, most interactive first: a click's decode, a tracking session's prompt/remove/reset, a tracking
# frame, an encode for a new upload, one batch of points of a segment-everything job.
PRIORITY = ("decode", "call", "track", "encode", "everything")


@dataclass
class Step:
    """One bounded unit of model work; pending steps of one kind with an equal, non-None `key` share a batch."""

    kind: str
    payload: Any
    key: Hashable = None


JobSteps = Generator[Step, Any, Any]
Runner = Callable[[list[Any]], list[Any]]  # payloads -> one result (or exception instance) per payload


@dataclass(eq=False)
class Job:
    steps: JobSteps
    deadline: float  # time.monotonic() after which the job is dropped between steps
    label: str = "job"
    on_expired: Callable[["Job"], BaseException] | None = None
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    enqueued: float = field(default_factory=time.monotonic)
    step: Step | None = None
    step_since: float = 0.0  # when its current step became pending


class Overloaded(Exception):
    """More jobs in the system than the queue allows."""


@dataclass(frozen=True)
class SchedulerConfig:
    max_batch: int = 8  # steps per batch (tracking sessions, decodes)
    encode_batch: int = 8  # images per encoder call
    max_wait_s: float = 0.005  # an encode waits this long for others to share its batch
    aging_s: float = 2.0  # a step that waited this long moves up one priority class
    max_jobs: int = 64  # jobs queued or in progress


class Scheduler:
    """Runs jobs' steps by priority on the calling thread (`run`); `submit` may be called from any thread."""

    def __init__(self, runners: dict[str, Runner], config: SchedulerConfig, metrics=None,
                 is_oom: Callable[[BaseException], bool] = lambda exc: False,
                 on_oom: Callable[[], None] = lambda: None) -> None:
        self.runners, self.config, self.metrics = runners, config, metrics
        self.is_oom, self.on_oom = is_oom, on_oom
        self._incoming: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._pending: dict[str, list[Job]] = {kind: [] for kind in PRIORITY}
        self._active = 0
        self._lock = threading.Lock()
        self.cancelled_steps = 0  # steps never run because their client left (also a metric)

    # ---- any thread ---------------------------------------------------------------------------------

    def submit(self, job: Job) -> Job:
        with self._lock:
            if self._active >= self.config.max_jobs:
                raise Overloaded(f"{self._active} jobs are queued or running")
            self._active += 1
        job.future.add_done_callback(lambda _: self._done())
        self._incoming.put(job)
        self._gauge()
        return job

    @property
    def active(self) -> int:
        return self._active

    def _done(self) -> None:
        with self._lock:
            self._active -= 1
        self._gauge()

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self._active)

    # ---- the worker thread ----------------------------------------------------------------------------

    def run(self, stopped: threading.Event) -> None:
        while not stopped.is_set():
            self.tick(idle_wait=0.1)

    def tick(self, idle_wait: float = 0.0) -> bool:
        """Admit new jobs, drop dead ones, run one batch. False when there was nothing to run."""
        self._admit(self._idle_timeout(idle_wait))
        self._drop_dead()
        picked = self._pick(time.monotonic())
        if picked is None:
            return False
        kind, jobs = picked
        self._run(kind, jobs)
        return True

    def _idle_timeout(self, idle_wait: float) -> float:
        """How long to block for new jobs: not at all when work is ready, until an encode batch is due else."""
        now = time.monotonic()
        if any(self._pending[k] for k in PRIORITY if k != "encode"):
            return 0.0
        enc = self._pending["encode"]
        if enc:
            if len(enc) >= self.config.encode_batch:
                return 0.0
            return max(0.0, min(j.step_since for j in enc) + self.config.max_wait_s - now)
        return idle_wait

    def _admit(self, timeout: float) -> None:
        try:
            job = self._incoming.get(timeout=timeout) if timeout > 0 else self._incoming.get_nowait()
        except queue.Empty:
            return
        while True:
            if self.metrics is not None:
                self.metrics.queue_wait.observe(time.monotonic() - job.enqueued)
            self._advance(job, None, None)
            try:
                job = self._incoming.get_nowait()
            except queue.Empty:
                return

    def _advance(self, job: Job, value: Any, exc: BaseException | None) -> None:
        """Send a step's result into the job; queue its next step or resolve its future."""
        if job.future.done():  # cancelled by its client while its step ran
            self._count_cancelled(job)
            return
        try:
            step = job.steps.throw(exc) if exc is not None else job.steps.send(value)
        except StopIteration as stop:
            _resolve(job.future, result=stop.value)
            return
        except BaseException as err:  # noqa: BLE001 - the job fails, the worker goes on
            if exc is None or err is not exc:
                log.debug("%s failed: %r", job.label, err)
            _resolve(job.future, exc=err)
            return
        if step.kind not in self._pending:
            _resolve(job.future, exc=ValueError(f"unknown step kind {step.kind!r}"))
            return
        job.step, job.step_since = step, time.monotonic()
        self._pending[step.kind].append(job)

    def _drop_dead(self) -> None:
        now = time.monotonic()
        for kind, jobs in self._pending.items():
            keep = []
            for job in jobs:
                if job.future.cancelled():
                    self._count_cancelled(job)
                elif now > job.deadline:
                    _resolve(job.future, exc=job.on_expired(job) if job.on_expired else TimeoutError(job.label))
                    job.steps.close()
                else:
                    keep.append(job)
            self._pending[kind] = keep

    def _count_cancelled(self, job: Job) -> None:
        self.cancelled_steps += 1
        if self.metrics is not None:
            self.metrics.cancelled_steps.inc()
        job.steps.close()

    def _pick(self, now: float) -> tuple[str, list[Job]] | None:
        """The kind to run (priority minus waiting / aging_s; encodes wait for company) and its batch."""
        best: tuple[float, str] | None = None
        for rank, kind in enumerate(PRIORITY):
            jobs = self._pending[kind]
            if not jobs:
                continue
            oldest = min(j.step_since for j in jobs)
            if kind == "encode" and len(jobs) < self.config.encode_batch and now - oldest < self.config.max_wait_s:
                continue  # not due yet: more uploads may join
            score = rank - (now - oldest) / self.config.aging_s
            if best is None or score < best[0]:
                best = (score, kind)
        if best is None:
            return None
        kind = best[1]
        jobs = sorted(self._pending[kind], key=lambda j: j.step_since)
        first = jobs[0]
        batch = [first]
        if first.step.key is not None:
            limit = self.config.encode_batch if kind == "encode" else self.config.max_batch
            batch += [j for j in jobs[1:] if j.step.key == first.step.key][: limit - 1]
        if self.metrics is not None:
            for job in batch:
                self.metrics.step_wait.labels(kind).observe(now - job.step_since)
        chosen = set(map(id, batch))
        self._pending[kind] = [j for j in self._pending[kind] if id(j) not in chosen]
        return kind, batch

    def _run(self, kind: str, jobs: list[Job]) -> None:
        results = self._run_batch(kind, jobs)
        for job, result in zip(jobs, results):
            if isinstance(result, BaseException):
                self._advance(job, None, result)
            else:
                self._advance(job, result, None)

    def _run_batch(self, kind: str, jobs: list[Job]) -> list[Any]:
        """Results per job; a failing batch is split so that a bad step fails only its own job."""
        t0 = time.perf_counter()
        try:
            results = self.runners[kind]([j.step.payload for j in jobs])
        except BaseException as exc:  # noqa: BLE001
            if len(jobs) == 1:
                return [exc]
            if self.is_oom(exc):
                log.warning("out of memory on a %s batch of %d: splitting it", kind, len(jobs))
                if self.metrics is not None:
                    self.metrics.oom_splits.labels(kind).inc()
                self.on_oom()
                half = len(jobs) // 2
                return self._run_batch(kind, jobs[:half]) + self._run_batch(kind, jobs[half:])
            log.warning("a %s batch of %d failed (%r): running its steps alone", kind, len(jobs), exc)
            return [r for job in jobs for r in self._run_batch(kind, [job])]
        if self.metrics is not None:
            self.metrics.step_seconds.labels(kind).observe(time.perf_counter() - t0)
            self.metrics.step_batch.labels(kind).observe(len(jobs))
        return results

    def fail_all(self, exc_factory: Callable[[], BaseException]) -> None:
        """Fail every queued and pending job (shutdown)."""
        while True:
            try:
                job = self._incoming.get_nowait()
            except queue.Empty:
                break
            _resolve(job.future, exc=exc_factory())
        for kind, jobs in self._pending.items():
            for job in jobs:
                _resolve(job.future, exc=exc_factory())
            self._pending[kind] = []


def _resolve(future: concurrent.futures.Future, result: Any = None, exc: BaseException | None = None) -> None:
    """Set a future's outcome unless its client cancelled it first."""
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass
