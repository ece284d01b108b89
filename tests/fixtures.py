"""Inputs the tests and benchmarks share: synthetic images and clips, their encodings, free ports.

Importable from anywhere (`from tests.fixtures import synthetic_clip`); no pytest fixtures here.
"""

from __future__ import annotations

import base64
import contextlib
import socket

import cv2
import numpy as np


def synthetic_image(h, w, seed=0):
    """A smooth random colour field with a few shapes: enough structure for stable masks."""
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.integers(0, 255, (9, 16, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    cv2.circle(img, (w // 3, h // 2), min(h, w) // 5, (250, 40, 40), -1)
    cv2.rectangle(img, (w // 2, h // 5), (w - w // 8, h - h // 4), (30, 200, 60), -1)
    return img


def synthetic_clip(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    """A smooth background with a disc and a square moving across it; the disc hides behind the square."""
    rng = np.random.default_rng(seed)
    bg = cv2.resize(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    frames = []
    for i in range(n):
        img = bg.copy()
        t = i / max(n - 1, 1)
        cv2.circle(img, (int(w * (0.2 + 0.5 * t)), int(h * 0.5)), h // 6, (240, 50, 50), -1)
        cv2.rectangle(img, (int(w * 0.55), int(h * (0.15 + 0.3 * t))), (int(w * 0.8), int(h * (0.5 + 0.3 * t))),
                      (40, 200, 80), -1)
        frames.append(img)
    return frames


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LOOPBACK = ("localhost", "127.0.0.1", "::1")


@contextlib.contextmanager
def no_internet():
    """Refuse every DNS lookup and connection that is not to loopback, and record them (a library phoning home).

    Yields the list of refused hosts; a test asserts it stayed empty.
    """
    refused: list[str] = []
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        if host not in LOOPBACK:
            refused.append(str(host))
            raise socket.gaierror(f"no internet in tests: lookup of {host!r} refused")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(sock, address):
        if isinstance(address, tuple) and address[0] not in LOOPBACK:
            refused.append(str(address[0]))
            raise OSError(f"no internet in tests: connection to {address!r} refused")
        return real_connect(sock, address)

    socket.getaddrinfo, socket.socket.connect = getaddrinfo, connect
    try:
        yield refused
    finally:
        socket.getaddrinfo, socket.socket.connect = real_getaddrinfo, real_connect
