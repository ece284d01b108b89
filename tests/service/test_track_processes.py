"""/v1/track across real processes: uvicorn servers sharing a real redis-server, killed and restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import torch

from model_core.video_tracker import VideoTracker
from service.client import TrackError, TrackSession, decode_rle
from tests.model_core.video_fixtures import synthetic_clip, tracking_model
from tests.redis_server import RedisServer, free_port

H, W = 96, 160
IMAGE_SIZE = 128


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A checkpoint of the test tracking model (random, with objects that read as present)."""
    model = tracking_model(IMAGE_SIZE)
    path = tmp_path_factory.mktemp("weights") / "tracking_tiny.pt"
    torch.save({"model": model.state_dict()}, path)
    return path, model


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"), password="pw", appendonly=True).start()
    yield server
    server.stop()


class Server:
    """`sam2-service serve` on 127.0.0.1 with the test weights and a Redis session store."""

    def __init__(self, weights_path, redis_url: str, log_dir, name: str) -> None:
        self.port = free_port()
        self.log = log_dir / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAM2_")}
        env.update(SAM2_REDIS_URL=redis_url, SAM2_WARMUP="false")
        cmd = [sys.executable, "-m", "service.cli", "serve", "--weights", str(weights_path), "--image-size",
               str(IMAGE_SIZE), "--dtype", "fp32", "--device", "cpu", "--host", "127.0.0.1", "--port",
               str(self.port), "--log-level", "warning"]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"{name} exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{name} not ready in 90 s:\n{self.log.read_text()}")
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/track"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def servers(weights, redis, tmp_path_factory):
    logs = tmp_path_factory.mktemp("servers")
    a, b = Server(weights[0], redis.url, logs, "A"), Server(weights[0], redis.url, logs, "B")
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture(scope="module")
def clip():
    return synthetic_clip(20, H, W, seed=7)


def uninterrupted(model, clip, second_object_at: int | None = 5, correct_at: int | None = None):
    """The reference run, on VideoTracker directly; a correction click on `correct_at` after it is tracked."""
    tracker = VideoTracker(model)
    state = tracker.new_state(H, W)
    tracker.add_prompt(state, 1, points=[[40, 48]], labels=[1])
    out = []
    for i, frame in enumerate(clip):
        if i == second_object_at:
            tracker.add_prompt(state, 2, box=[90, 10, 130, 50])
        out.append(tracker.track(state, frame))
        if i == correct_at:
            tracker.add_prompt(state, 1, points=[[60, 40]], labels=[0], frame="current")
    return out


def assert_same(msg, expected):
    assert msg["frame_idx"] == expected.frame_idx
    assert [o["obj_id"] for o in msg["objects"]] == [o.obj_id for o in expected.objects]
    for o, e in zip(msg["objects"], expected.objects):
        np.testing.assert_array_equal(decode_rle(o["rle"]), e.mask)
        assert o["score"] == pytest.approx(e.score, abs=1e-5)


def test_failover_to_another_replica_after_sigkill(servers, weights, clip):
    a, b = servers
    expected = uninterrupted(weights[1], clip, correct_at=3)
    session = TrackSession.open(a.url)
    session.add_prompt(1, points=[[40, 48]], labels=[1])
    for i in range(10):
        if i == 5:
            assert session.add_prompt(2, box=[90, 10, 130, 50])["frame_idx"] == 5
        assert_same(session.send_frame(clip[i]), expected[i])
        if i == 3:  # a correction on the current frame, carried in the session's memory from here on
            assert session.add_prompt(1, points=[[60, 40]], labels=[0], frame="current")["refined"]
    sid, token = session.session_id, session.resume_token
    a.kill()  # the replica dies mid-session, without any chance to flush
    resumed = TrackSession.resume(b.url, sid, token)
    assert resumed.frame_idx == 10
    for i in range(10, 20):
        assert_same(resumed.send_frame(clip[i]), expected[i])
    resumed.close()
    with pytest.raises(TrackError, match="not_found"):
        TrackSession.resume(b.url, sid, token)


def test_redis_restart_mid_session_and_redis_down(servers, weights, redis, clip):
    _, b = servers
    expected = uninterrupted(weights[1], clip[:10], second_object_at=None)
    session = TrackSession.open(b.url)
    session.add_prompt(1, points=[[40, 48]], labels=[1])
    for i in range(3):
        assert_same(session.send_frame(clip[i]), expected[i])
    redis.restart()  # appendonly: the session survives in Redis
    for i in range(3, 5):
        assert_same(session.send_frame(clip[i]), expected[i])

    redis.stop()  # Redis down: tracking goes on here, the client is told once
    for i in range(5, 7):
        assert_same(session.send_frame(clip[i]), expected[i])
    assert [n["code"] for n in session.notes if n["type"] == "error"] == ["store_unavailable"]
    with pytest.raises(TrackError, match="store_unavailable"):
        TrackSession.open(b.url)  # a new session cannot start without its store
    with httpx.Client() as http:  # the REST API is unaffected
        assert http.get(f"http://127.0.0.1:{b.port}/readyz").status_code == 200

    redis.start()  # back: the next step rewrites the whole session, and it is resumable again
    assert_same(session.send_frame(clip[7]), expected[7])
    assert any(n["type"] == "store_recovered" for n in session.notes)
    sid, token = session.session_id, session.resume_token
    session.close(end_session=False)
    resumed = TrackSession.resume(b.url, sid, token)
    for i in range(8, 10):
        assert_same(resumed.send_frame(clip[i]), expected[i])
    resumed.close()
