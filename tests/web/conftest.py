"""The web page in a real browser: Debian's chromium driven by Python playwright (no `playwright install`),
against a real `sam2-service serve` (tiny, random weights, 128 px) with API keys on.

Outside CI a missing browser or playwright skips these tests; in CI (`SAM2_CI=1`, set by .ci/run) it fails them.
Screenshots go to $SAM2_SCREENSHOTS when set (`SAM2_SCREENSHOTS=docs/web` refreshes the README's), else to tmp.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.redis_server import free_port
from tests.serve_process import ServeProcess

REPO = Path(__file__).resolve().parents[2]
IN_CI = bool(os.environ.get("SAM2_CI"))
CHROMIUM = os.environ.get("SAM2_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
API_KEY = "web-page-test-key"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 "--disable-features=Translate,MediaRouter,OptimizationHints", "--mute-audio"]


def unavailable(what: str) -> None:
    msg = f"{what} is not available: `apt-get install chromium` and `pip install playwright` (.ci/run does both)"
    if IN_CI:
        pytest.fail(msg + " -- in CI (SAM2_CI=1) the browser tests must run", pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def playwright_driver():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright (Python)")
    if not Path(CHROMIUM).exists():
        unavailable(f"chromium ({CHROMIUM})")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """`sam2-service serve`: tiny, random weights, 128 px, fp32, API keys on (the page must send the key)."""
    log = tmp_path_factory.mktemp("web-serve") / "serve.log"
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    proc = ServeProcess(log, ["--model", "sam2.1_t", "--weights", "random", "--device", "cpu", "--image-size", "128",
                              "--dtype", "fp32"],
                        env={"SAM2_API_KEYS": digest, "SAM2_MAX_WAIT_MS": "1", "SAM2_TRACK_QUEUE_FRAMES": "4"})
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def browser(playwright_driver):
    b = playwright_driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> Path:
    target = os.environ.get("SAM2_SCREENSHOTS")
    path = (REPO / target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


class PageErrors(list):
    """JavaScript exceptions and console errors of a page (a test ends by asserting there were none)."""

    def watch(self, page, allow: tuple[str, ...] = ()) -> None:
        page.on("pageerror", lambda exc: self.append(f"pageerror: {exc}"))
        page.on("console", lambda m: m.type == "error" and not any(a in m.text for a in allow)
                and self.append(f"console: {m.text}"))


def open_page(browser, server, *, key: str | None = API_KEY, viewport=(1280, 800), path: str = "/",
              allow_errors: tuple[str, ...] = ()):
    """A fresh browser context (empty session storage) on the page, with the API key typed in if given."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, accept_downloads=True)
    page = context.new_page()
    errors = PageErrors()
    errors.watch(page, allow_errors)
    page.goto(server.url + path)
    if key is not None:
        page.fill("#api-key", key)
        page.click("#key-use")
        page.wait_for_selector("#model-info[data-state=random]")
        # the first /v1/models went out before the key was typed: its 401 is expected (and shown as such)
        errors[:] = [e for e in errors if "401 (Unauthorized)" not in e]
    return context, page, errors


def canvas_rgb(page, selector: str) -> np.ndarray:
    """The pixels a canvas shows, read through a lossless PNG (HxWx3 RGB)."""
    url = page.eval_on_selector(selector, "c => c.toDataURL('image/png')")
    png = base64.b64decode(url.split(",", 1)[1])
    bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def click_at(page, selector: str, x: float, y: float, **kwargs) -> None:
    """Click the canvas at its pixel (x, y) (the centre of that pixel), wherever CSS has put and scaled it."""
    box = page.locator(selector).bounding_box()
    w, h = page.eval_on_selector(selector, "c => [c.width, c.height]")
    page.mouse.click(box["x"] + (x + 0.5) * box["width"] / w, box["y"] + (y + 0.5) * box["height"] / h, **kwargs)


def page_point(page, selector: str, x: float, y: float) -> tuple[float, float]:
    box = page.locator(selector).bounding_box()
    w, h = page.eval_on_selector(selector, "c => [c.width, c.height]")
    return box["x"] + (x + 0.5) * box["width"] / w, box["y"] + (y + 0.5) * box["height"] / h


class CuttingProxy:
    """A TCP proxy in front of the server that can cut its WebSocket connections at once, as a server or
    gateway restart does: both sockets are aborted, the page sees the connection drop (code 1006)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.websockets: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.tasks: set[asyncio.Task] = set()
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        assert started.wait(10), "proxy did not start"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        started.set()
        self.loop.run_forever()

    async def _handle(self, client_r, client_w) -> None:
        self.tasks.add(asyncio.current_task())
        try:
            await self._serve(client_r, client_w)
        except asyncio.CancelledError:
            pass
        finally:
            self.tasks.discard(asyncio.current_task())

    async def _serve(self, client_r, client_w) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        head = await client_r.read(65536)
        if b"upgrade: websocket" in head.lower():
            self.websockets.append((client_w, up_w))
        up_w.write(head)
        await asyncio.gather(self._pipe(client_r, up_w), self._pipe(up_r, client_w))

    @staticmethod
    async def _pipe(reader, writer) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def cut_websockets(self) -> int:
        """Abort every WebSocket connection seen so far that is still open; returns how many."""
        async def cut() -> int:
            n = 0
            for client_w, up_w in self.websockets:
                if not client_w.is_closing():
                    n += 1
                client_w.transport.abort()
                up_w.transport.abort()
            self.websockets.clear()
            return n
        return asyncio.run_coroutine_threadsafe(cut(), self.loop).result(10)

    def close(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
