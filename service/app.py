"""The FastAPI application: `create_app(settings, engine=None)` wires settings, engine, routes and metrics."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool

from . import __version__, ws_tokens
from .auth import require_api_key
from .engine import Engine
from .errors import CrashGuardMiddleware, install_error_handlers
from .inputs import BodyLimitMiddleware
from .metrics import RequestMetricsMiddleware
from .openapi import install_openapi
from .pod_deletion_cost import DeletionCostPublisher, KubeTarget
from .routers import demo, embed, everything, health, models, segment, track
from .schemas import (
    EmbedForm, EmbedRequest, EverythingForm, EverythingRequest, ProblemDetails, SegmentForm, SegmentRequest,
)
from .session_store import MemoryStore, RedisStore
from .settings import Settings
from .track_sessions import TrackSessions

DESCRIPTION = """Promptable segmentation with SAM 2 / SAM 2.1: an image and a few clicks or boxes in, masks out.

Masks are COCO RLE by default (`pycocotools.mask.decode`), or polygons, or PNG. Errors are RFC 9457
problem details (`application/problem+json`). With API keys configured, send `Authorization: Bearer <key>`
or `X-API-Key: <key>` on every /v1 route."""


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """The service. Without `engine`, one is built from `settings` and started (loading, warm-up) in the
    background at start-up, and stopped at shutdown; a given engine is started if needed and left running."""
    settings = settings or Settings()
    owns_engine = engine is None
    engine = engine if engine is not None else Engine(settings)

    store = RedisStore(settings.redis_url) if settings.redis_url else MemoryStore()
    sessions = TrackSessions(engine, store, settings, engine.metrics)
    deletion_cost = (DeletionCostPublisher(KubeTarget.from_settings(settings), lambda: len(sessions.live),
                                           settings.pod_deletion_cost_interval)
                     if settings.pod_deletion_cost else None)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        if deletion_cost:
            deletion_cost.start()
        yield
        if deletion_cost:
            await deletion_cost.stop()
        await store.close()
        if owns_engine:
            await run_in_threadpool(engine.stop)

    app = FastAPI(
        title="sam2-service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs" if settings.docs else None,
        openapi_url="/openapi.json" if settings.docs else None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.ws_token_secret = (settings.ws_token_secret.encode("utf-8") if settings.ws_token_secret
                                 else ws_tokens.new_secret())
    app.state.engine = engine
    app.state.track_sessions = sessions
    app.state.deletion_cost = deletion_cost

    def count_error(kind: str) -> None:
        engine.metrics.errors.labels(kind).inc()

    install_error_handlers(app, count_error)
    app.add_middleware(CrashGuardMiddleware, count_error=count_error)  # innermost: a 500 stays inside the app
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes, count_error=count_error,
                       read_timeout=settings.body_timeout)
    app.add_middleware(RequestMetricsMiddleware, metrics=engine.metrics)  # outermost: times everything

    app.include_router(health.router)
    if settings.demo:
        app.include_router(demo.router)  # the web page: static files, public (the API calls carry the key)
    app.include_router(track.router)  # authenticates in the handler (WebSockets carry keys differently)
    secured = [Depends(require_api_key)]
    for router in (segment.router, everything.router, embed.router, models.router):
        app.include_router(router, dependencies=secured)
    install_openapi(app, [SegmentRequest, SegmentForm, EmbedRequest, EmbedForm, EverythingRequest, EverythingForm,
                          ProblemDetails])
    return app


def app_from_env() -> FastAPI:
    """ASGI factory for `uvicorn service.app:app_from_env --factory`: settings from SAM2_* variables."""
    return create_app(Settings())
