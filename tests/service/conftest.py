"""Fixtures for the service tests: one tiny random-weights model for the session, engines and ASGI clients.

The model is SAM 2.1 tiny at 128 px in fp32 on the CPU: fast on 2 cores, and deterministic.
"""

from __future__ import annotations

import base64
import contextlib

import cv2
import httpx
import numpy as np
import pytest

from model_core import ImagePredictor, build_model
from service.app import create_app
from service.engine import Engine
from service.settings import Settings

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


def make_image(h: int = 96, w: int = 144, seed: int = 0) -> np.ndarray:
    """A small RGB test picture: coloured shapes on a gradient, different for each seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), np.full_like(xx, 60)], -1).astype(np.uint8)
    for _ in range(4):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        cv2.circle(img, (x, y), int(rng.integers(8, min(h, w) // 2)), color, -1)
    cv2.rectangle(img, (w // 5, h // 4), (w // 2, h // 2 + 10), (250, 240, 30), -1)
    return img


def png_bytes(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


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
