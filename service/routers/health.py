"""GET /healthz (the process is alive), /readyz (the model is loaded and warm), /metrics (Prometheus)."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from .. import errors
from ..dependencies import AnyEngineDep
from ..metrics import CONTENT_TYPE_LATEST
from ..openapi import problem_responses

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
async def healthz(engine: AnyEngineDep) -> JSONResponse:
    """200 while the process can serve; 503 (restart it) once loading the model failed, the device failed, or
    the model worker has not come back for `worker_stall_seconds` (a hung device)."""
    if engine.error is not None:
        return errors.Problem(503, "load-failed", "Model failed to load", engine.status_detail()).response("/healthz")
    if engine.device_error is not None:
        return errors.Problem(503, "device-failed", "Device failed", engine.status_detail()).response("/healthz")
    stalled = time.monotonic() - engine.heartbeat
    if engine.ready and stalled > engine.settings.worker_stall_seconds:
        detail = f"the model worker has not come back for {stalled:.0f} s"
        return errors.Problem(503, "worker-stalled", "Model worker stalled", detail).response("/healthz")
    return JSONResponse({"status": "ok"})


@router.get("/readyz", summary="Readiness", responses=problem_responses(503))
async def readyz(engine: AnyEngineDep) -> JSONResponse:
    """200 once the model is loaded and warmed up; 503 before (and while shutting down)."""
    if not engine.ready:
        raise errors.not_ready(engine.status_detail(), engine.settings.retry_after)
    return JSONResponse({"status": "ready", "model": engine.model.cfg.name})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(engine: AnyEngineDep) -> Response:
    return Response(engine.metrics.render(), media_type=CONTENT_TYPE_LATEST)
