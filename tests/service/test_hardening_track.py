"""Issue 12, /v1/track side: one writer per session, nothing acknowledged is lost, client mistakes stay client
errors. Redis cases run a real redis-server on loopback."""

from __future__ import annotations

import asyncio
import json
import math
import struct
import zlib

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from model_core.video_tracker import ObjectResult, TrackResult
from service.engine_errors import Overloaded, QueueTimeout
from service.session_store import MemoryStore, RedisStore
from service.track_sessions import TrackError, TrackSessions, result_message
from tests.redis_server import RedisServer
from tests.service.conftest import make_settings
from tests.service.test_track import app_for, clip, engine, model, png, recv, start  # noqa: F401 - fixtures

H, W = 96, 160
CLICK = {"type": "prompt", "obj_id": 1, "points": [[40, 48]], "labels": [1]}


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def rdb(redis_server):
    r = redis.Redis(port=redis_server.port)
    r.flushall()
    r.config_set("maxmemory", 0)
    r.config_set("maxmemory-policy", "noeviction")
    yield r
    r.config_set("maxmemory", 0)
    r.config_set("maxmemory-policy", "noeviction")
    r.close()


def frame_and_masks(ws, rgb, seq_ok=True):
    ws.send_bytes(png(rgb))
    return recv(ws, "masks")


def tracking_one_object(ws, first_frame):
    """A new session with one clicked object, tracked on its first frame; the session's hello."""
    hello = start(ws)
    ws.send_json(CLICK)
    recv(ws, "ack")
    frame_and_masks(ws, first_frame)
    return hello


# ---- 5, 6. one writer: the connection that resumed last owns the session --------------------------------


def test_a_resume_fences_off_the_older_connection_with_the_memory_store(engine, clip):
    with TestClient(app_for(engine)) as client:
        with client.websocket_connect("/v1/track") as old:
            hello = start(old)
            old.send_json(CLICK)
            recv(old, "ack")
            assert frame_and_masks(old, clip[0])["frame_idx"] == 0
            with client.websocket_connect("/v1/track") as new:
                new.send_json({"type": "resume", "session_id": hello["session_id"],
                               "resume_token": hello["resume_token"]})
                assert recv(new, "session")["frame_idx"] == 1
                old.send_bytes(png(clip[1]))
                assert recv(old, "error")["code"] == "session_moved"
                assert frame_and_masks(new, clip[1])["frame_idx"] == 1
                assert frame_and_masks(new, clip[2])["frame_idx"] == 2


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_step_pending_on_the_old_connection_cannot_kill_the_new_one(engine, redis_server, rdb, kind):
    """The old connection's in-flight step commits after the resume: it is the one refused, not the new one."""
    async def scenario():
        store = MemoryStore() if kind == "memory" else RedisStore(redis_server.url)
        sessions = TrackSessions(engine, store, make_settings(), engine.metrics)
        old = await sessions.start("anonymous", {"width": W, "height": H})
        new = await sessions.resume("anonymous", old.session_id, old.token)
        with pytest.raises(TrackError) as exc:
            await sessions.persist(old)  # the frame that was in flight when the client reconnected
        assert exc.value.code == "session_moved"
        assert await sessions.persist(new) is None
        sessions.detach(old)  # the old socket's clean-up must not drop the new one
        assert sessions.live[new.session_id] is new
        await store.close()

    asyncio.run(scenario())


# ---- 7, 8. a full or evicting Redis ----------------------------------------------------------------------


def test_redis_out_of_memory_is_the_store_unavailable(engine, clip, redis_server, rdb):
    before = engine.metrics.value("sam2_store_errors_total")
    with TestClient(app_for(engine, redis_url=redis_server.url)) as client:
        with client.websocket_connect("/v1/track") as ws:
            hello = tracking_one_object(ws, clip[0])
            rdb.config_set("maxmemory", 1)  # noeviction: every write is refused with OOM
            ws.send_bytes(png(clip[1]))
            note = ws.receive_json()
            assert (note["type"], note.get("code")) == ("error", "store_unavailable"), note
            assert recv(ws, "masks")["frame_idx"] == 1
            assert frame_and_masks(ws, clip[2])["frame_idx"] == 2  # told once; tracking goes on
            rdb.config_set("maxmemory", 0)
            ws.send_bytes(png(clip[3]))
            assert ws.receive_json()["type"] == "store_recovered"
            assert recv(ws, "masks")["frame_idx"] == 3
        assert engine.metrics.value("sam2_store_errors_total") >= before + 2
        with client.websocket_connect("/v1/track") as ws:
            ws.send_json({"type": "resume", "session_id": hello["session_id"], "resume_token": hello["resume_token"]})
            assert recv(ws, "session")["frame_idx"] == 4


def test_a_partly_evicted_session_is_rewritten_live_and_refused_cleanly_on_resume(engine, clip, redis_server, rdb):
    with TestClient(app_for(engine, redis_url=redis_server.url)) as client:
        with client.websocket_connect("/v1/track") as ws:
            hello = tracking_one_object(ws, clip[0])
            assert rdb.delete(*rdb.keys("*:entries")) == 1  # what allkeys-lru may do to one key
            frame_and_masks(ws, clip[1])
        sid, token = hello["session_id"], hello["resume_token"]
        with client.websocket_connect("/v1/track") as ws:  # the live socket rewrote it in full
            ws.send_json({"type": "resume", "session_id": sid, "resume_token": token})
            assert recv(ws, "session")["frame_idx"] == 2
            frame_and_masks(ws, clip[2])
        rdb.delete(*rdb.keys("*:header"))
        with client.websocket_connect("/v1/track") as ws:
            ws.send_json({"type": "resume", "session_id": sid, "resume_token": token})
            err = recv(ws, "error")
            assert err["code"] == "not_found" and "incomplete" in err["detail"], err


def as_version(blob: bytes, version: int) -> bytes:
    """A version 1 state blob relabelled as another format version (as another release would write it)."""
    body = blob[:-4].replace(b'"version":1,', f'"version":{version},'.encode(), 1)
    assert body != blob[:-4] and len(body) == len(blob) - 4
    return body + struct.pack("<I", zlib.crc32(body))


def stored_keys(r: redis.Redis) -> dict:
    """Every key in Redis with its serialised value."""
    return {k: r.dump(k) for k in sorted(r.keys("*"))}


def test_a_state_of_a_version_this_replica_cannot_read_is_refused_and_left_as_it_is(engine, clip, redis_server,
                                                                                   rdb):
    """A session stored by a newer release (format version 3), resumed here during a rolling upgrade: its own
    error naming both versions; the stored session is not taken over, and the connection that has it goes on."""
    before = engine.metrics.value("sam2_errors_total", {"kind": "state_version_unsupported"})
    with TestClient(app_for(engine, redis_url=redis_server.url)) as client:
        with client.websocket_connect("/v1/track") as live:
            hello = tracking_one_object(live, clip[0])
            (header_key,) = rdb.keys("*:header")
            rdb.set(header_key, as_version(rdb.get(header_key), 3), keepttl=True)
            stored = stored_keys(rdb)
            with client.websocket_connect("/v1/track") as ws:
                ws.send_json({"type": "resume", "session_id": hello["session_id"],
                              "resume_token": hello["resume_token"]})
                err = recv(ws, "error")
                assert err["code"] == "state_version_unsupported", err
                assert "format version 3, this replica reads versions 1, 2" in err["detail"], err
            assert stored_keys(rdb) == stored
            assert frame_and_masks(live, clip[1])["frame_idx"] == 1  # not session_moved: still its writer
    assert engine.metrics.value("sam2_errors_total", {"kind": "state_version_unsupported"}) == before + 1


def test_real_allkeys_lru_eviction_never_breaks_a_session(engine, clip, redis_server, rdb):
    """Redis evicting under memory pressure, for real: the live socket keeps tracking (rewriting what was
    evicted), and a resume either continues at the right frame or is a clean not_found; never internal."""
    used = rdb.info("memory")["used_memory"]
    rdb.config_set("maxmemory", used + (4 << 20))
    rdb.config_set("maxmemory-policy", "allkeys-lru")
    filler = b"x" * (64 << 10)
    with TestClient(app_for(engine, redis_url=redis_server.url)) as client:
        with client.websocket_connect("/v1/track") as ws:
            hello = start(ws)
            ws.send_json(CLICK)
            recv(ws, "ack")
        frame_idx = 0
        for round_ in range(3):
            with client.websocket_connect("/v1/track") as ws:
                ws.send_json({"type": "resume", "session_id": hello["session_id"],
                               "resume_token": hello["resume_token"]})
                msg = ws.receive_json()
                if msg["type"] == "error":
                    assert msg["code"] == "not_found", msg
                    return
                assert msg["frame_idx"] == frame_idx, msg
                for i in range(2):
                    for k in range(40):  # 2.5 MiB of newer keys: older ones are evicted
                        rdb.set(f"filler:{round_}:{i}:{k}", filler)
                    ws.send_bytes(png(clip[frame_idx % len(clip)]))
                    assert recv(ws, "masks")["frame_idx"] == frame_idx
                    frame_idx += 1
        assert rdb.info("stats")["evicted_keys"] > 0


# ---- 9. a full engine queue is back-pressure ---------------------------------------------------------------


@pytest.mark.parametrize("refusal", [Overloaded, QueueTimeout])
def test_a_full_queue_answers_busy_and_keeps_the_session_and_its_prompts(engine, clip, monkeypatch, refusal):
    with TestClient(app_for(engine)) as client, client.websocket_connect("/v1/track") as ws:
        start(ws)
        ws.send_json(CLICK)
        recv(ws, "ack")
        real_call, real_track = engine.call, engine.track

        async def full(*args, **kwargs):
            raise refusal("the queue is full", 1)

        monkeypatch.setattr(engine, "call", full)
        monkeypatch.setattr(engine, "track", full)
        ws.send_bytes(png(clip[0]))
        busy = ws.receive_json()
        assert (busy["type"], busy["seq"]) == ("busy", 0), busy
        monkeypatch.setattr(engine, "call", real_call)
        monkeypatch.setattr(engine, "track", real_track)
        masks = frame_and_masks(ws, clip[0])
        assert masks["frame_idx"] == 0 and [o["obj_id"] for o in masks["objects"]] == [1]


# ---- 10. abandoned sessions do not count against the live limit -----------------------------------------


def test_dropped_sockets_do_not_lock_a_key_out(engine):
    with TestClient(app_for(engine, track_sessions_per_key=1)) as client:
        for _ in range(3):
            with client.websocket_connect("/v1/track") as ws:
                start(ws)  # then the socket drops without a close: the session stays resumable
        with client.websocket_connect("/v1/track") as ws:
            start(ws)
            with client.websocket_connect("/v1/track") as second:
                second.send_json({"type": "start"})
                assert recv(second, "error")["code"] == "limit"


def test_stored_sessions_have_their_own_cap(engine):
    with TestClient(app_for(engine, track_stored_sessions_per_key=2)) as client:
        for _ in range(2):
            with client.websocket_connect("/v1/track") as ws:
                start(ws)
        with client.websocket_connect("/v1/track") as ws:
            ws.send_json({"type": "start"})
            err = recv(ws, "error")
            assert err["code"] == "limit" and "stored" in err["detail"]


# ---- 11. prompts before the first frame -------------------------------------------------------------------


def test_early_prompts_are_checked_on_arrival_and_one_bad_one_drops_nothing_else(engine, clip):
    with TestClient(app_for(engine)) as client, client.websocket_connect("/v1/track") as ws:
        start(ws)
        ws.send_json({**CLICK, "labels": [7]})
        assert recv(ws, "error")["code"] == "bad_prompt"
        ws.send_json({**CLICK, "obj_id": 2, "points": [[900, 900]]})  # off the frame: known at frame 0
        recv(ws, "ack")
        ws.send_json(CLICK)
        recv(ws, "ack")
        ws.send_bytes(png(clip[0]))
        err = recv(ws, "error")
        assert err["code"] == "bad_prompt" and "outside" in err["detail"]
        assert [o["obj_id"] for o in recv(ws, "masks")["objects"]] == [1]


def test_early_prompts_are_bounded(engine):
    with TestClient(app_for(engine, track_max_pending_prompts=3)) as client, \
            client.websocket_connect("/v1/track") as ws:
        start(ws)
        for i in range(3):
            ws.send_json({**CLICK, "obj_id": i})
            recv(ws, "ack")
        ws.send_json({**CLICK, "obj_id": 9})
        assert recv(ws, "error")["code"] == "limit"


def test_json_messages_are_bounded_in_size(engine):
    with TestClient(app_for(engine, track_max_text_bytes=2048)) as client, \
            client.websocket_connect("/v1/track") as ws:
        start(ws)
        ws.send_json({**CLICK, "points": [[1.0, 1.0]] * 300, "labels": [1] * 300})
        assert recv(ws, "error")["code"] == "limit"
        ws.send_json(CLICK)
        recv(ws, "ack")


def test_deeply_nested_json_is_bad_message(engine):
    with TestClient(app_for(engine)) as client, client.websocket_connect("/v1/track") as ws:
        ws.send_text("[" * 100_000 + "]" * 100_000)
        assert recv(ws, "error")["code"] == "bad_message"
        start(ws)


def test_acknowledged_early_prompts_survive_a_resume(engine, clip):
    with TestClient(app_for(engine)) as client:
        with client.websocket_connect("/v1/track") as ws:
            hello = start(ws)
            ws.send_json(CLICK)
            recv(ws, "ack")
        with client.websocket_connect("/v1/track") as ws:
            ws.send_json({"type": "resume", "session_id": hello["session_id"], "resume_token": hello["resume_token"]})
            recv(ws, "session")
            assert [o["obj_id"] for o in frame_and_masks(ws, clip[0])["objects"]] == [1]


# ---- 13, 14. wrong types and prompts REST would refuse ------------------------------------------------------


@pytest.mark.parametrize("message, code", [
    ({"type": "start", "model": ["sam2.1_t"]}, "bad_message"),
    ({"type": "start", "width": True, "height": 10}, "bad_message"),
    ({"type": "start", "mode": {"a": 1}}, "bad_message"),
    ({"type": "resume", "session_id": ["x"], "resume_token": "y"}, "bad_message"),
])
def test_start_fields_of_the_wrong_type_are_bad_message(engine, message, code):
    with TestClient(app_for(engine)) as client, client.websocket_connect("/v1/track") as ws:
        ws.send_json(message)
        assert recv(ws, "error")["code"] == code
        start(ws)  # the connection lives on


BAD_PROMPTS = [
    {"obj_id": 1, "box": [float("nan"), 1, 20, 20]},
    {"obj_id": 1, "box": [1, 1, float("inf"), 20]},
    {"obj_id": 1, "box": [10, 10, 5, 5]},
    {"obj_id": 1, "box": [0, 0, 500, 20]},
    {"obj_id": 1, "points": [[10, 10]], "labels": [7]},
    {"obj_id": 1, "points": [[10, 10]], "labels": [2]},
    {"obj_id": 1, "points": [[10, 10]], "labels": [-100]},
    {"obj_id": 1, "points": [[10, 10]], "labels": [1], "update_memory": "no"},
    {"obj_id": [1], "points": [[10, 10]]},
    {"obj_id": 1, "mask": {"size": [H, W], "counts": [2**70]}},
    {"obj_id": 1, "mask": {"size": [H, W], "counts": "x" * 10, "extra": 1}},
]


def test_prompts_get_the_rest_checks_and_the_session_lives_on(engine, clip):
    with TestClient(app_for(engine)) as client, client.websocket_connect("/v1/track") as ws:
        start(ws, width=W, height=H)
        for bad in BAD_PROMPTS:
            ws.send_text(json.dumps({"type": "prompt", **bad}))
            assert recv(ws, "error")["code"] == "bad_prompt", bad
        ws.send_json({"type": "remove_object", "obj_id": [1]})
        assert recv(ws, "error")["code"] == "bad_message"
        ws.send_json(CLICK)
        recv(ws, "ack")
        masks = frame_and_masks(ws, clip[0])
        assert [o["obj_id"] for o in masks["objects"]] == [1]


def test_no_nan_leaves_the_server():
    mask = np.zeros((4, 4), bool)
    result = TrackResult(0, [ObjectResult(1, mask, None, float("nan"), float("-inf"), False)])
    msg = result_message(result)
    json.dumps(msg, allow_nan=False)
    assert msg["objects"][0]["score"] is None


# ---- 15. message sizes agree with the pixel limit ---------------------------------------------------------


def test_the_websocket_message_limit_fits_the_largest_raw_frame():
    s = make_settings()
    assert s.max_ws_message_bytes >= 12 + 3 * s.max_image_pixels
    assert s.max_ws_message_bytes >= s.max_image_bytes
