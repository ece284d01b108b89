"""FastAPI dependencies: the app's settings and engine, taken from app.state (set once by create_app)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .engine import Engine
from .settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
