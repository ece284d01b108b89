"""Prometheus metrics of one service instance, in their own registry (never the global one).

The names are a contract with the Grafana dashboard and the alert rules: change them only together.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for the /metrics route)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DEVICE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)


class Metrics:
    """Every sam2_* metric, registered in a fresh CollectorRegistry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_duration = Histogram(
            "sam2_request_duration_seconds", "HTTP request latency", ["route", "method", "status"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge("sam2_queue_depth", "jobs waiting for the model", registry=r)
        self.queue_wait = Histogram(
            "sam2_queue_wait_seconds", "time a job waited before the worker took it", buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "sam2_batch_size", "images per image-encoder call", buckets=BATCH_BUCKETS, registry=r,
        )
        self.device_seconds = Histogram(
            "sam2_device_seconds", "model time per stage (encoder, decoder, amg)", ["stage", "model"],
            buckets=DEVICE_BUCKETS, registry=r,
        )
        self.step_seconds = Histogram(
            "sam2_step_seconds", "model time per scheduled step, by kind", ["kind"], buckets=DEVICE_BUCKETS,
            registry=r,
        )
        self.step_batch = Histogram(
            "sam2_step_batch", "jobs sharing one step, by kind", ["kind"], buckets=BATCH_BUCKETS, registry=r,
        )
        self.step_wait = Histogram(
            "sam2_step_wait_seconds", "time a step waited to run, by kind (its priority class)", ["kind"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.cancelled_steps = Counter(
            "sam2_cancelled_steps", "steps dropped because their client went away", registry=r,
        )
        self.oom_splits = Counter(
            "sam2_oom_splits", "batches split and retried after running out of device memory", ["kind"], registry=r,
        )
        self.cache_hits = Counter("sam2_embedding_cache_hits", "embedding cache hits", registry=r)
        self.cache_misses = Counter("sam2_embedding_cache_misses", "embedding cache misses", registry=r)
        self.cache_bytes = Gauge("sam2_embedding_cache_bytes", "bytes held by the embedding cache", registry=r)
        self.model_info = Gauge(
            "sam2_model_info", "the loaded model (value 1)", ["model", "device", "dtype", "image_size"], registry=r,
        )
        self.errors = Counter("sam2_errors", "requests answered with an error, by kind", ["kind"], registry=r)
        self.encoder_runs = Counter("sam2_encoder_runs", "images run through the image encoder", registry=r)
        # /v1/track sessions
        self.active_sessions = Gauge("sam2_active_sessions", "tracking sessions live on this replica", registry=r)
        self.frames_tracked = Counter("sam2_frames_tracked", "frames tracked, all sessions", registry=r)
        self.frame_latency = Histogram(
            "sam2_frame_latency_seconds", "frame received -> its masks sent", buckets=LATENCY_BUCKETS, registry=r,
        )
        self.store_write_seconds = Histogram(
            "sam2_store_write_seconds", "session store write per step", buckets=DEVICE_BUCKETS, registry=r,
        )
        self.store_write_bytes = Histogram(
            "sam2_store_write_bytes", "bytes written to the session store per step",
            buckets=(1e3, 4e3, 16e3, 64e3, 256e3, 1e6, 4e6, 16e6, 64e6), registry=r,
        )
        self.session_resumes = Counter("sam2_session_resumes", "sessions resumed from the store", registry=r)
        self.dropped_frames = Counter("sam2_dropped_frames", "frames refused or dropped by back-pressure", registry=r)
        self.store_errors = Counter("sam2_store_errors", "session store operations that failed", registry=r)
        self.gpu_memory = Gauge("sam2_gpu_memory_bytes", "CUDA memory of this process (0 on CPU)", ["kind"],
                                registry=r)
        self.gpu_memory.labels("allocated").set_function(_cuda_memory("allocated"))
        self.gpu_memory.labels("reserved").set_function(_cuda_memory("reserved"))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current value of a sample (e.g. `sam2_encoder_runs_total`), 0 if absent: for tests and diagnostics."""
        v = self.registry.get_sample_value(name, labels or {})
        return 0.0 if v is None else v


def _cuda_memory(kind: str):
    """A scrape-time reader of torch's CUDA allocator statistics."""

    def read() -> float:
        import torch

        if not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return 0.0
        return float(torch.cuda.memory_allocated() if kind == "allocated" else torch.cuda.memory_reserved())

    return read


class RequestMetricsMiddleware:
    """Times every HTTP request into sam2_request_duration_seconds, labelled by route template, not raw path."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.request_duration.labels(route, scope["method"], str(status)).observe(
                time.perf_counter() - start
            )
