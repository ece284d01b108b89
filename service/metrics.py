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
        self.cache_hits = Counter("sam2_embedding_cache_hits", "embedding cache hits", registry=r)
        self.cache_misses = Counter("sam2_embedding_cache_misses", "embedding cache misses", registry=r)
        self.cache_bytes = Gauge("sam2_embedding_cache_bytes", "bytes held by the embedding cache", registry=r)
        self.model_info = Gauge(
            "sam2_model_info", "the loaded model (value 1)", ["model", "device", "dtype", "image_size"], registry=r,
        )
        self.errors = Counter("sam2_errors", "requests answered with an error, by kind", ["kind"], registry=r)
        self.encoder_runs = Counter("sam2_encoder_runs", "images run through the image encoder", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current value of a sample (e.g. `sam2_encoder_runs_total`), 0 if absent: for tests and diagnostics."""
        v = self.registry.get_sample_value(name, labels or {})
        return 0.0 if v is None else v


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
