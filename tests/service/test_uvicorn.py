"""The real thing: `sam2-service serve` in a uvicorn process on 127.0.0.1, spoken to over HTTP."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from tests.serve_process import ServeProcess

from .conftest import IMAGE_SIZE


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("uvicorn") / "server.log"
    proc = ServeProcess(log, ["--weights", "random", "--image-size", IMAGE_SIZE, "--dtype", "fp32", "--device", "cpu"],
                        env={"SAM2_MAX_WAIT_MS": "2"})  # a setting from the environment, beside the flags
    yield proc.url
    proc.stop()


def test_segment_over_real_http(server, image_png):
    with httpx.Client(base_url=server, timeout=30) as c:
        r = c.post("/v1/segment", files={"image": ("a.png", image_png, "image/png")},
                   data={"objects": json.dumps([{"points": [[40, 50]], "labels": [1]}])})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["width"], body["height"]) == (144, 96) and len(body["objects"][0]["masks"]) == 3
        again = c.post("/v1/segment", json={"image_id": body["image_id"], "objects": [{"points": [[40, 50]]}]})
        assert again.json()["objects"] == body["objects"]
        metrics = c.get("/metrics").text
        assert "sam2_encoder_runs_total 1.0" in metrics
        assert c.get("/v1/models").json()["loaded"]["image_size"] == IMAGE_SIZE
        assert c.get("/openapi.json").status_code == 200


def test_tracking_socket_is_not_deflated_unless_configured(server):
    """Frames arrive as JPEG/PNG: deflating them costs both ends ~10 ms a frame for little, so the server does
    not accept per-message deflate by default (SAM2_WS_DEFLATE=true does), and our client does not offer it."""
    from websockets.sync.client import connect

    from service.cli import uvicorn_options
    from service.client import TrackSession
    from service.settings import Settings

    ws_url = server.replace("http://", "ws://") + "/v1/track"
    with connect(ws_url, compression="deflate", proxy=None) as ws:  # a client that offers it, as browsers do
        assert ws.request.headers.get("Sec-WebSocket-Extensions", "").startswith("permessage-deflate")
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
    session = TrackSession.open(ws_url)
    assert session.ws.request.headers.get("Sec-WebSocket-Extensions") is None
    session.add_prompt(1, points=[[40, 50]], labels=[1])
    assert session.send_frame(np.zeros((96, 144, 3), np.uint8))["frame_idx"] == 0
    session.close()
    assert uvicorn_options(Settings(ws_deflate=True))["ws_per_message_deflate"] is True
