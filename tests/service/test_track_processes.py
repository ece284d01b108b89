"""/v1/track across real processes: uvicorn servers sharing a real redis-server, killed and restarted."""

from __future__ import annotations


import httpx
import numpy as np
import pytest
import torch

from model_core.video_tracker import VideoTracker
from service.client import TrackError, TrackSession, decode_rle
from tests.model_core.video_fixtures import tracking_model
from tests.fixtures import synthetic_clip
from tests.redis_server import RedisServer
from tests.serve_process import ServeProcess

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


def serve(weights_path, redis_url: str, log_dir, name: str) -> ServeProcess:
    """`sam2-service serve` with the test weights and a Redis session store."""
    args = ["--weights", weights_path, "--image-size", IMAGE_SIZE, "--dtype", "fp32", "--device", "cpu"]
    return ServeProcess(log_dir / f"{name}.log", args, env={"SAM2_REDIS_URL": redis_url, "SAM2_WARMUP": "false"},
                        ready_timeout=90)


@pytest.fixture(scope="module")
def servers(weights, redis, tmp_path_factory):
    logs = tmp_path_factory.mktemp("servers")
    a, b = serve(weights[0], redis.url, logs, "A"), serve(weights[0], redis.url, logs, "B")
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
    session = TrackSession.open(a.ws_url)
    session.add_prompt(1, points=[[40, 48]], labels=[1])
    for i in range(10):
        if i == 5:
            assert session.add_prompt(2, box=[90, 10, 130, 50])["frame_idx"] == 5
        assert_same(session.send_frame(clip[i]), expected[i])
        if i == 3:  # a correction on the current frame, carried in the session's memory from here on
            assert session.add_prompt(1, points=[[60, 40]], labels=[0], frame="current")["refined"]
    sid, token = session.session_id, session.resume_token
    a.kill()  # the replica dies mid-session, without any chance to flush
    resumed = TrackSession.resume(b.ws_url, sid, token)
    assert resumed.frame_idx == 10
    for i in range(10, 20):
        assert_same(resumed.send_frame(clip[i]), expected[i])
    resumed.close()
    with pytest.raises(TrackError, match="not_found"):
        TrackSession.resume(b.ws_url, sid, token)


def test_redis_restart_mid_session_and_redis_down(servers, weights, redis, clip):
    _, b = servers
    expected = uninterrupted(weights[1], clip[:10], second_object_at=None)
    session = TrackSession.open(b.ws_url)
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
        TrackSession.open(b.ws_url)  # a new session cannot start without its store
    with httpx.Client() as http:  # the REST API is unaffected
        assert http.get(f"{b.url}/readyz").status_code == 200

    redis.start()  # back: the next step rewrites the whole session, and it is resumable again
    assert_same(session.send_frame(clip[7]), expected[7])
    assert any(n["type"] == "store_recovered" for n in session.notes)
    sid, token = session.session_id, session.resume_token
    session.close(end_session=False)
    resumed = TrackSession.resume(b.ws_url, sid, token)
    for i in range(8, 10):
        assert_same(resumed.send_frame(clip[i]), expected[i])
    resumed.close()
