"""Service settings: pydantic-settings, environment prefix `SAM2_`, each one documented in the README table."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from . import DEFAULT_MAX_IMAGE_PIXELS

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class Settings(BaseSettings):
    """Everything an operator can set. Passed explicitly to `create_app` and `Engine`; no globals."""

    model_config = SettingsConfigDict(env_prefix="SAM2_", extra="ignore", frozen=True)

    # the model
    model: str = Field("sam2.1_t", description="model name: sam2.1_t|s|b|l, sam2_t|s|b|l or Meta's names")
    weights: str | None = Field(
        None, description="checkpoint path, 'random' (untrained; tests only), or unset for the official cached file"
    )
    weights_sha256: str | None = Field(
        None, description="sha256 (hex) the downloaded checkpoint must have; a download that differs is refused"
    )
    device: str | None = Field(
        None, description="torch device (cpu, cuda, cuda:1) or a GPU index (0); unset: cuda if available, else cpu"
    )
    dtype: str | None = Field(
        None, description="fp32, bf16 or fp16 autocast; unset: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32"
    )
    image_size: int | None = Field(None, description="model input side (multiple of 32); unset: 1024")

    # HTTP
    host: str = Field("127.0.0.1", description="address `serve` binds to")
    port: int = Field(8000, ge=0, le=65535, description="port `serve` listens on")
    docs: bool = Field(True, description="serve /docs and /openapi.json")
    header_timeout: float = Field(10.0, gt=0, description="seconds a connection may take to send a request's headers")
    body_timeout: float = Field(30.0, gt=0, description="seconds a request body may pause between two reads")
    max_connections: int = Field(
        512, ge=1, description="open connections and running requests per process; more are answered 503"
    )
    demo: bool = Field(True, description="serve the web page at / and /demo")

    # the engine
    max_batch: int | None = Field(
        None, ge=1, le=256, description="most images per encoder call; unset: 1 on CPU (batching gains nothing "
        "there), 8 on CUDA (2.3x the images/s of single calls on an H200)"
    )
    track_batch: int = Field(8, ge=1, le=256, description="most tracking sessions (and prompt sets) per step")
    max_wait_ms: float = Field(5.0, ge=0, description="how long a job waits for others to share its encoder call")
    queue_size: int = Field(64, ge=1, description="jobs waiting for the model at most; more get 503")
    request_timeout: float = Field(30.0, gt=0, description="seconds a job may wait in the queue before a 503")
    everything_timeout: float = Field(
        300.0, gt=0, description="seconds a segment-everything job may take, queueing included, before a 503"
    )
    everything_step_points: int | None = Field(
        None, ge=1, le=1024, description="points of a segment-everything job per step (a click waits for one step "
        "at most); unset: 8 on CPU, 64 on CUDA"
    )
    priority_aging_ms: float = Field(
        2000.0, gt=0, description="a step that waited this long moves up one priority class (no starvation)"
    )
    retry_after: int = Field(1, ge=0, description="Retry-After seconds sent with a 503")
    cudnn_attention: bool = Field(
        False, description="on CUDA, let attention use cuDNN's kernels; off: flash / memory-efficient ones, whose "
        "lower per-call CPU cost gave 1.7x tracking frames/s on an H200 (README, GPU)"
    )
    compile: Literal["off", "default", "max-autotune", "reduce-overhead"] = Field(
        "off", description="torch.compile the image encoder, memory encoder, memory attention and mask decoder; "
        "encoder batches padded to power-of-two buckets; graphs built by the warm-up before /readyz reports ready; "
        "reduce-overhead adds CUDA graphs"
    )
    warmup: bool = Field(True, description="run one encode + decode before /readyz reports ready")
    host_malloc: Literal["keep", "system"] = Field(
        "keep", description="keep: glibc serves large tensors from its heap and keeps freed memory for the next "
        "pass (no page faults per pass; 61% -> 70% of the GEMM rate for a CPU encoder pass, README); "
        "system: glibc's default (mmap per large block, memory returned on free)"
    )
    worker_stall_seconds: float = Field(
        120.0, gt=0, description="/healthz fails once the model worker has not come back for this long (a hung device)"
    )
    cache_bytes: int = Field(1 << 30, ge=0, description="embedding cache bound in bytes (0 disables caching)")

    # limits
    max_image_bytes: int = Field(20 << 20, ge=1, description="largest image upload, in bytes")
    max_image_pixels: int = Field(
        DEFAULT_MAX_IMAGE_PIXELS, ge=1,
        description="largest image, width x height: read from the header before decoding, and OpenCV's own "
                    "decode-time limit (set when the process starts)"
    )
    max_objects: int = Field(32, ge=1, description="objects (prompt sets) per /v1/segment request")
    max_points: int = Field(64, ge=1, description="points per object")
    max_points_per_side: int = Field(64, ge=1, description="largest points_per_side of /v1/segment/everything")
    max_json_containers: int = Field(
        10_000, ge=1, description="JSON objects and arrays per request body (or multipart field), counted before parsing"
    )
    max_crop_layers: int = Field(2, ge=0, description="largest crop_n_layers of /v1/segment/everything")

    # /v1/track sessions
    redis_url: str | None = Field(
        None, description="session store: redis://[:password@]host:port/db (rediss:// for TLS), "
        "redis+sentinel://[:password@]host:port[,...]/<master>[/db], redis+cluster://[:password@]host:port[,...]; "
        "unset: in-process"
    )
    track_queue_frames: int = Field(4, ge=1, le=256, description="frames waiting per session at most")
    track_backpressure: Literal["reject", "drop_oldest"] = Field(
        "reject", description="when a client sends frames faster than they are tracked: reject new or drop oldest"
    )
    track_read_ahead: Literal["auto", "on", "off"] = Field(
        "auto", description="decode and resize a session's next waiting frame while the one before it is tracked; "
        "auto: on with CUDA, off on the CPU, where the decoding only takes cores from the tracking step"
    )
    track_idle_seconds: float = Field(300.0, gt=0, description="close a socket with no message for this long")
    ws_deflate: bool = Field(
        False, description="offer WebSocket per-message deflate (RFC 7692): off, because frames come as JPEG/PNG "
        "already and deflating them cost ~10 ms a frame at each end for ~30% fewer bytes; on for slow links"
    )
    ws_token_ttl: int = Field(60, ge=1, le=3600, description="seconds a token from POST /v1/track/token is valid")
    ws_token_secret: str | None = Field(
        None, min_length=32, description="HMAC key of those tokens, the same on every replica (a Secret); unset: a "
        "random key per process, so a token works only on the replica that made it"
    )
    track_session_ttl: int = Field(3600, ge=1, description="seconds a session stays resumable after its last step")
    track_sessions_per_key: int = Field(16, ge=1, description="live sessions (open sockets) per API key, per replica")
    track_stored_sessions_per_key: int = Field(
        256, ge=1, description="sessions per API key kept resumable in the store (live or not) at most"
    )
    track_max_pending_prompts: int = Field(
        64, ge=1, description="prompts waiting for a session's first frame at most"
    )
    track_max_text_bytes: int = Field(4 << 20, ge=1024, description="largest JSON message on /v1/track, in bytes")
    track_max_objects: int = Field(32, ge=1, description="objects per tracking session")

    # Kubernetes
    pod_deletion_cost: bool = Field(
        False, description="keep this pod's controller.kubernetes.io/pod-deletion-cost annotation at its number of "
        "live tracking sessions, so a scale-down removes the idlest pods (needs SAM2_POD_NAME, SAM2_POD_NAMESPACE "
        "and RBAC to patch the pod: the chart's podDeletionCost.enabled)"
    )
    pod_deletion_cost_interval: float = Field(10.0, gt=0, description="seconds between two checks of the count")
    pod_name: str | None = Field(None, description="this pod's name (downward API)")
    pod_namespace: str | None = Field(None, description="this pod's namespace (downward API)")
    kube_api_url: str | None = Field(
        None, description="Kubernetes API base URL; unset: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"
    )

    # auth
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="sha256 hex digests of the accepted API keys, comma separated; empty: no auth",
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value):
        if isinstance(value, str):
            value = [v for v in (part.strip() for part in value.split(",")) if v]
        return value

    @field_validator("api_keys")
    @classmethod
    def _check_hashes(cls, value: list[str]) -> list[str]:
        keys = [v.lower() for v in value]
        bad = [k for k in keys if not _SHA256_HEX.match(k)]
        if bad:
            raise ValueError(
                "SAM2_API_KEYS holds sha256 hex digests of the keys (64 hex characters each), not the keys: "
                "`printf %s \"$KEY\" | sha256sum`"
            )
        return keys

    @field_validator("weights", "weights_sha256", "device", "dtype", "redis_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value):
        return None if value == "" else value

    @field_validator("weights_sha256")
    @classmethod
    def _sha256_hex(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256_HEX.match(value.lower()):
            raise ValueError("SAM2_WEIGHTS_SHA256 is the checkpoint's sha256 in hex (64 characters): `sha256sum FILE`")
        return value.lower() if value else value

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        from model_core import canonical_name

        canonical_name(value)  # ValueError listing the known names
        return value

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str | None) -> str | None:
        if value is not None:
            from model_core.precision import parse_dtype

            parse_dtype(value)
        return value

    @field_validator("device")
    @classmethod
    def _valid_device(cls, value: str | None) -> str | None:
        """What the engine will resolve (model_core's device strings), checked at start-up."""
        if value is not None:
            from model_core.model_loading import resolve_device

            try:
                resolve_device(value)
            except ValueError:
                raise ValueError(f"not a torch device: {value!r} (cpu, cuda, cuda:1, or a GPU index: 0, ...)") from None
        return value

    @field_validator("image_size")
    @classmethod
    def _multiple_of_32(cls, value: int | None) -> int | None:
        if value is not None and (value <= 0 or value % 32):
            raise ValueError(f"image_size must be a positive multiple of 32, got {value}")
        return value

    @property
    def max_ws_message_bytes(self) -> int:
        """Largest WebSocket message: the biggest frame the limits allow (raw RGB8 of max_image_pixels, or an
        image file) or a JSON message."""
        return max(12 + 3 * self.max_image_pixels, self.max_image_bytes, self.track_max_text_bytes)

    @property
    def max_request_bytes(self) -> int:
        """Largest request body: a base64 image (4/3 of the bytes) plus room for prompts and form framing."""
        return self.max_image_bytes * 4 // 3 + (1 << 20)
