"""On the CPU the service runs torch on its worker thread only (service/model_work.py says why).

Each thread that enters one of torch's OpenMP parallel regions gets an OpenMP team of its own: one more native
thread per such thread with 2 threads a team. So a fresh process serves segment, embed and tracking traffic, and
its native threads (OS threads that are not Python threads) must not grow.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import asyncio, json, os, threading, time
import cv2, numpy as np, torch
torch.set_num_threads(2)
from fastapi.testclient import TestClient
from service.app import create_app
from tests.fixtures import png_bytes, synthetic_clip
from tests.model_core.video_fixtures import tracking_model
from tests.service.conftest import make_settings, running_engine

def native():
    time.sleep(0.3)  # threads that have just ended, gone from both counts
    return len(os.listdir("/proc/self/task")) - threading.active_count()

frames = synthetic_clip(4, 240, 320)
pngs = [png_bytes(f) for f in frames]
cv2.cvtColor(cv2.resize(frames[0], (1280, 960)), cv2.COLOR_RGB2BGR)  # OpenCV's own pool, made here
with running_engine(tracking_model(128)) as engine:
    asyncio.run(engine.call(lambda: torch.ones(2**20).add_(1).sum()))  # the worker's team, made here
    with TestClient(create_app(engine.settings, engine)) as client:
        before = native()
        r = client.post("/v1/segment", files={"image": ("a.png", pngs[0], "image/png")},
                        data={"objects": json.dumps([{"points": [[100, 120]], "labels": [1]}])})
        assert r.status_code == 200, r.text
        assert client.post("/v1/embed", files={"image": ("b.png", pngs[1], "image/png")}).status_code == 200
        def masks_until(ws, last):
            kinds = []
            while not kinds or kinds[-1] != last:
                kinds.append(ws.receive_json()["type"])
            return kinds.count("masks")

        with client.websocket_connect("/v1/track") as ws:
            ws.send_json({"type": "start"})
            hello = ws.receive_json()
            ws.send_json({"type": "prompt", "obj_id": 1, "points": [[100, 120]], "labels": [1]})
            for data in pngs[:3]:
                ws.send_bytes(data)
            ws.send_json({"type": "prompt", "obj_id": 1, "points": [[150, 100]], "labels": [0], "frame": "current"})
            ws.send_json({"type": "prompt", "obj_id": 2, "box": [20, 30, 90, 100]})  # answered in turn, after them
            assert masks_until(ws, "ack") == 0 and masks_until(ws, "ack") == 4
        with client.websocket_connect("/v1/track") as ws:  # resumed: the state is read back from the store
            ws.send_json({"type": "resume", "session_id": hello["session_id"], "resume_token": hello["resume_token"]})
            ws.send_bytes(pngs[3])
            ws.send_json({"type": "close"})
            assert masks_until(ws, "closed") == 1
        print(json.dumps({"before": before, "after": native(), "threads": torch.get_num_threads()}))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_the_cpu_service_runs_torch_on_one_thread():
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts["threads"] == 2
    assert counts["after"] == counts["before"], counts  # no OpenMP team of a handler's thread
