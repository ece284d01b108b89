"""FastAPI dependencies: the app's settings and engine, taken from app.state (set once by create_app)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from . import errors
from .engine import Engine
from .settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_ready_engine(request: Request) -> Engine:
    """The engine, or 503 (with Retry-After) while the model is still loading."""
    engine: Engine = request.app.state.engine
    if not engine.ready:
        raise errors.not_ready(engine.status_detail(), engine.settings.retry_after)
    return engine


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_ready_engine)]  # the /v1 routes
AnyEngineDep = Annotated[Engine, Depends(get_engine)]  # health and metrics: also before the model is ready
