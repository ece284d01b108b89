"""The real thing: `sam2-service serve` in a uvicorn process on 127.0.0.1, spoken to over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from .conftest import IMAGE_SIZE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("uvicorn") / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAM2_")}
    env["SAM2_MAX_WAIT_MS"] = "2"  # a setting from the environment, beside the flags
    cmd = [sys.executable, "-m", "service.cli", "serve", "--weights", "random", "--image-size", str(IMAGE_SIZE),
           "--dtype", "fp32", "--device", "cpu", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready in 90 s:\n{log.read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
