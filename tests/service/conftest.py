"""Fixtures for the service tests: one tiny random-weights model for the session, engines and ASGI clients.

The model is SAM 2.1 tiny at 128 px in fp32 on the CPU: fast on 2 cores, and deterministic.
"""

from __future__ import annotations

import contextlib

import httpx
import numpy as np
import pytest

from model_core import ImagePredictor, build_model
from service.app import create_app
from service.engine import Engine
from service.settings import Settings
from tests.fixtures import b64, make_image, png_bytes  # noqa: F401  (used by the fixtures below)

IMAGE_SIZE = 128
BASE_SETTINGS = dict(weights="random", image_size=IMAGE_SIZE, dtype="fp32", device="cpu", warmup=False)


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="session")
def tiny_model():
    return build_model("sam2.1_t", weights="random", image_size=IMAGE_SIZE)


def make_settings(**overrides) -> Settings:
    return Settings(**{**BASE_SETTINGS, **overrides})


@contextlib.contextmanager
def running_engine(model, **overrides):
    """A started, ready engine on the shared model; stopped afterwards."""
    engine = Engine(make_settings(**overrides), model=model).start()
    assert engine.wait_ready(60), engine.status_detail()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def engine(tiny_model):
    """The default engine of a test module."""
    with running_engine(tiny_model) as eng:
        yield eng


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def client(engine):
    """An ASGI client of an app on the module's engine, default settings (no auth)."""
    async with client_for(create_app(engine.settings, engine)) as c:
        yield c


@pytest.fixture(scope="session")
def image() -> np.ndarray:
    return make_image()


@pytest.fixture(scope="session")
def image_png(image) -> bytes:
    return png_bytes(image)


@pytest.fixture(scope="module")
def predictor(tiny_model, image):
    """Meta-style ImagePredictor on the same model and image: what the service's masks must equal."""
    p = ImagePredictor(tiny_model)
    p.set_image(image)
    return p


def multipart(image_bytes: bytes, **fields) -> dict:
    """httpx kwargs for a multipart request with the image as a file part."""
    return {"files": {"image": ("image.png", image_bytes, "image/png")}, "data": fields}
