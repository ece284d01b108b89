"""Live video mode in Chromium: a fake camera plays a generated .y4m clip; the page tracks an object over
/v1/track (with a short-lived token from POST /v1/track/token), keeps drawing masks, and resumes its session after the connection is cut."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS, CuttingProxy, canvas_rgb, click_at, open_page

W, H, FPS = 160, 120, 10
SQUARE = 46


def square_x(i: int) -> int:
    """The square's left edge on frame i: back and forth, 1 px per frame (so the clip loops smoothly)."""
    period = 2 * 50
    k = i % period
    return 30 + (k if k < 50 else period - k)


def write_clip(path: Path, frames: int = 100) -> Path:
    """A y4m clip (what Chromium's fake camera plays): a bright square sliding over a dark, textured floor."""
    rng = np.random.default_rng(0)
    floor = (rng.integers(0, 40, (H, W, 3)) + 20).astype(np.uint8)
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{W} H{H} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            rgb = floor.copy()
            x = square_x(i)
            rgb[37:37 + SQUARE, x:x + SQUARE] = (240, 200, 40)
            f.write(b"FRAME\n" + cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


@pytest.fixture(scope="module")
def camera_browser(playwright_driver, tmp_path_factory):
    clip = write_clip(tmp_path_factory.mktemp("clip") / "clip.y4m")
    b = playwright_driver.chromium.launch(executable_path=CHROMIUM, args=[
        *CHROMIUM_ARGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={clip}"])
    try:
        yield b
    finally:
        b.close()


def wait_until(page, predicate, timeout: float, what: str):
    """Poll `predicate` while playwright delivers the page's events (sync playwright only does inside its calls)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g} s")
        page.wait_for_timeout(100)
    return value


def square_centre(page) -> tuple[int, int]:
    """Where the square is on the picture the page shows now (its bright pixels' centre)."""
    rgb = canvas_rgb(page, "#live-canvas").astype(int)
    ys, xs = np.nonzero((rgb[..., 0] > 180) & (rgb[..., 1] > 140) & (rgb[..., 2] < 120))
    assert len(xs) > 100, "the square is not on the page's picture"
    return int(xs.mean()), int(ys.mean())


def test_live_tracking_survives_a_cut_connection(camera_browser, server, screenshot_dir):
    proxy = CuttingProxy(server.port)
    context, page, errors = open_page(camera_browser, SimpleNamespace(url=proxy.url), path="/?mode=live")
    sent, received = [], []

    def on_socket(ws):
        assert "token=" in ws.url and "api_key=" not in ws.url, "the page opens the socket with a short-lived token"
        ws.on("framesent", lambda p: sent.append(json.loads(p)) if isinstance(p, str) else sent.append("frame"))
        ws.on("framereceived", lambda p: received.append(json.loads(p)))
    page.on("websocket", on_socket)
    try:
        page.select_option("#capture-size", "160")
        page.click("#camera")
        page.wait_for_selector("#live-source:has-text('camera 160x120')")
        page.click("#track-start")
        page.wait_for_selector("#stat-state[data-state=tracking]")
        assert sent[0] == {"type": "start", "width": W, "height": H}
        wait_until(page, lambda: any(m["type"] == "masks" for m in received), 30, "first frame answered")

        # click on the object: a new object for the next frame
        x, y = square_centre(page)
        click_at(page, "#live-canvas", x, y)
        wait_until(page, lambda: any(m.get("type") == "prompt" for m in sent if isinstance(m, dict)), 5, "prompt sent")
        prompt = next(m for m in sent if isinstance(m, dict) and m["type"] == "prompt")
        assert prompt == {"type": "prompt", "obj_id": 1, "frame": "next", "points": [[x, y]], "labels": [1]}

        def tracked():
            return [m for m in received if m["type"] == "masks" and not m.get("refined")
                    and any(o["obj_id"] == 1 for o in m["objects"])]
        wait_until(page, lambda: len(tracked()) >= 10, 90, "masks of object 1 for 10 frames")
        frames = [m["frame_idx"] for m in tracked()]
        assert frames == sorted(frames) and len(set(frames)) == len(frames)
        shown = int(page.inner_text("#live-masked"))
        present = sum(any(o["present"] for o in m["objects"]) for m in received if m["type"] == "masks")
        assert shown == present, "the page counts the frames whose masks it drew"
        assert page.inner_text("#stat-fps") != "–" and "ms" in page.inner_text("#stat-latency")
        assert page.inner_text("#stat-pressure").startswith(("ok", "waiting"))
        session = next(m for m in received if m["type"] == "session")
        assert not session["resumed"]

        # the server's end of the connection goes away: the page resumes the same session
        answered_before = len(tracked())
        last_frame = frames[-1]
        assert proxy.cut_websockets() == 1
        page.wait_for_selector("#stat-resumes:has-text('1')", timeout=30000)
        page.wait_for_selector("#stat-state[data-state=tracking]")
        resumed = [m for m in received if m["type"] == "session" and m["resumed"]]
        # (a frame still running on the cut connection can be written to the store after the resume, and the
        # server then tells the new connection session_moved; the page resumes once more in that case)
        assert 1 <= len(resumed) <= 2 and all(m["session_id"] == session["session_id"] for m in resumed)
        assert resumed[0]["objects"] == [1] and resumed[0]["frame_idx"] > last_frame
        assert {"type": "resume", "session_id": session["session_id"],
                "resume_token": session["resume_token"]} in sent
        wait_until(page, lambda: len(tracked()) >= answered_before + 5, 60, "masks after the resume")
        assert tracked()[-1]["frame_idx"] > last_frame

        # a correction click on the tracked object refines the latest frame ("current")
        x, y = square_centre(page)
        page.keyboard.down("Shift")
        click_at(page, "#live-canvas", min(W - 1, x + SQUARE // 2 + 4), y)
        page.keyboard.up("Shift")
        wait_until(page, lambda: any(m["type"] == "masks" and m.get("refined") for m in received), 30, "a refined mask")
        correction = [m for m in sent if isinstance(m, dict) and m["type"] == "prompt"][-1]
        assert correction["frame"] == "current" and correction["obj_id"] == 1 and correction["labels"] == [0]
        page.screenshot(path=str(screenshot_dir / "live.png"))

        # stop (the socket closes, the session is kept) and end it
        page.keyboard.press("Space")
        page.wait_for_selector("#stat-state[data-state=paused]")
        page.click("#track-start")
        page.wait_for_selector("#stat-resumes:has-text('2')", timeout=30000)
        page.click("#track-end")
        page.wait_for_selector("#stat-state[data-state=ended]")
        assert received[-1] == {"type": "closed"} or {"type": "closed"} in received
        assert all(m["code"] == "session_moved" for m in received if m["type"] == "error")
        assert not errors, errors
    except BaseException:
        print("page stats:", page.inner_text(".stats").replace("\n", " "), "| message:", page.inner_text("#message"),
              "| sent:", [m for m in sent if m != "frame"][-5:], sent.count("frame"), "frames",
              "| received:", [m for m in received if m["type"] != "masks"][-5:], received[-1:])
        raise
    finally:
        context.close()
        proxy.close()
