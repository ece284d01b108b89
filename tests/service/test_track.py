"""WS /v1/track through the ASGI app: sessions, prompts, errors, ownership and back-pressure."""

import json

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from model_core.mask_ops import decode_rle
from model_core.video_tracker import VideoTracker
from service.app import create_app
from service.auth import hash_key
from service.track_sessions import encode_raw_frame
from tests.model_core.video_fixtures import tracking_model
from tests.fixtures import synthetic_clip
from tests.service.conftest import make_settings, running_engine

H, W = 96, 160


@pytest.fixture(scope="module")
def model():
    return tracking_model(128)


@pytest.fixture(scope="module")
def clip():
    return synthetic_clip(8, H, W)


@pytest.fixture(scope="module")
def engine(model):
    with running_engine(model) as eng:
        yield eng


def png(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def app_for(engine, **overrides):
    return create_app(make_settings(**overrides), engine=engine)


def recv(ws, kind):
    """The next message of a type, failing on anything else but notes."""
    while True:
        msg = ws.receive_json()
        if msg["type"] == kind:
            return msg
        assert msg["type"] in ("store_recovered",), msg


def start(ws, **fields):
    ws.send_json({"type": "start", **fields})
    return recv(ws, "session")


def direct_run(model, clip, script):
    """The same session run on VideoTracker directly: script[i] = prompts sent before frame i."""
    tracker = VideoTracker(model)
    state = tracker.new_state(H, W)
    out = []
    for i, frame in enumerate(clip):
        for kind, kw in script.get(i, []):
            if kind == "next":
                tracker.add_prompt(state, **kw)
        out.append(tracker.track(state, frame))
        for kind, kw in script.get((i, "after"), []):
            out.append(tracker.add_prompt(state, **kw, frame="current"))
    return out


def test_a_session_gives_the_trackers_masks(engine, model, clip):
    script = {
        0: [("next", dict(obj_id=1, points=[[40, 48]], labels=[1]))],
        (2, "after"): [("current", dict(obj_id=1, points=[[60, 40]], labels=[0]))],
        5: [("next", dict(obj_id=2, box=[90, 10, 130, 50]))],
    }
    expected = direct_run(model, clip, script)
    got = []
    with TestClient(app_for(engine)) as client, client.websocket_connect("/v1/track") as ws:
        hello = start(ws)
        assert len(hello["session_id"]) >= 22 and len(hello["resume_token"]) >= 22 and hello["frame_idx"] == 0
        for i, frame in enumerate(clip):
            for _, kw in script.get(i, []):
                ws.send_json({"type": "prompt", **kw})
                assert recv(ws, "ack")["frame_idx"] == i
            ws.send_bytes(png(frame))
            got.append(recv(ws, "masks"))
            for _, kw in script.get((i, "after"), []):
                ws.send_json({"type": "prompt", "frame": "current", **kw})
                reply = recv(ws, "masks")
                assert reply["refined"] and reply["frame_idx"] == i
                got.append(reply)
    assert [m["frame_idx"] for m in got if "seq" in m] == list(range(len(clip)))
    assert len(got) == len(expected)
    for msg, exp in zip(got, expected):
        exp_objects = exp.objects if hasattr(exp, "objects") else [exp]
        assert [o["obj_id"] for o in msg["objects"]] == [o.obj_id for o in exp_objects]
        for o, e in zip(msg["objects"], exp_objects):
            np.testing.assert_array_equal(decode_rle(o["rle"]), e.mask)
            assert o["present"] == e.present and o["score"] == pytest.approx(e.score, abs=1e-4)
    assert any(o["present"] for m in got for o in m["objects"])


def test_a_client_that_does_not_wait_gets_the_same_masks_in_order(engine, model, clip):
    """Everything sent at once (prompts between frames, a correction, an undecodable frame): the answers come in
    the order sent and equal the tracker's, though each frame is read while the one before it is tracked."""
    script = {
        0: [("next", dict(obj_id=1, points=[[40, 48]], labels=[1]))],
        (2, "after"): [("current", dict(obj_id=1, points=[[60, 40]], labels=[0]))],
        4: [("next", dict(obj_id=2, box=[90, 10, 130, 50]))],
    }
    expected = direct_run(model, clip, script)
    app = app_for(engine, track_queue_frames=16, track_read_ahead="on")
    with TestClient(app) as client, client.websocket_connect("/v1/track") as ws:
        start(ws)
        for i, frame in enumerate(clip):
            for _, kw in script.get(i, []):
                ws.send_json({"type": "prompt", **kw})
            ws.send_bytes(png(frame))
            for _, kw in script.get((i, "after"), []):
                ws.send_json({"type": "prompt", "frame": "current", **kw})
            if i == 5:
                ws.send_bytes(b"\x89PNG\r\n\x1a\n garbage")
        answers = [ws.receive_json() for _ in range(len(expected) + 3)]  # + 2 acks + 1 error
    kinds = [(m["type"], m.get("frame_idx"), m.get("refined", False)) for m in answers]
    assert kinds == [("ack", 0, False), ("masks", 0, False), ("masks", 1, False), ("masks", 2, False),
                     ("masks", 2, True), ("masks", 3, False), ("ack", 4, False), ("masks", 4, False),
                     ("masks", 5, False), ("error", None, False), ("masks", 6, False), ("masks", 7, False)]
    assert answers[9]["code"] == "bad_frame"
    got = [m for m in answers if m["type"] == "masks"]
    for msg, exp in zip(got, expected, strict=True):
        exp_objects = exp.objects if hasattr(exp, "objects") else [exp]
        assert [o["obj_id"] for o in msg["objects"]] == [o.obj_id for o in exp_objects]
        for o, e in zip(msg["objects"], exp_objects):
            np.testing.assert_array_equal(decode_rle(o["rle"]), e.mask)


@pytest.mark.parametrize("read_ahead", ["on", "auto"])
def test_a_socket_reads_one_frame_ahead_of_the_step_and_no_more(engine, clip, read_ahead):
    """Read ahead on: frame k+1 is decoded while frame k is tracked; frame k+2 waits until frame k is done (one
    frame of the encoder's input ahead per session, whatever the client sends). `auto` on the CPU: off, each
    frame is read in its turn."""
    import time as _time

    app = app_for(engine, track_queue_frames=16, track_read_ahead=read_ahead)
    sessions = app.state.track_sessions
    events: list[tuple[str, int]] = []
    read, track = sessions.read_frame, sessions.track_frame
    n = 6
    frames = [png(clip[i]) for i in range(n)]

    def logged_read(data):
        events.append(("read", frames.index(data)))
        return read(data)

    async def slow_track(session, frame):
        k = session.state.frame_idx
        events.append(("track", k))
        _time.sleep(0.02)  # a slower step, so a read that overlaps it cannot be missed
        out = await track(session, frame)
        events.append(("done", k))
        return out

    sessions.read_frame, sessions.track_frame = logged_read, slow_track
    with TestClient(app) as client, client.websocket_connect("/v1/track") as ws:
        start(ws)
        ws.send_json({"type": "prompt", "obj_id": 1, "points": [[40, 48]], "labels": [1]})
        recv(ws, "ack")
        for data in frames:
            ws.send_bytes(data)
        assert [recv(ws, "masks")["frame_idx"] for _ in range(n)] == list(range(n))
    at = {e: i for i, e in enumerate(events)}
    for k in range(1, n):
        assert at[("done", k - 1)] < at[("track", k)]
    # each frame is read before the one before it is done: whether the client's frames had all arrived by then
    # depends on the socket, so at least most of them
    overlapped = [k for k in range(1, n) if at[("read", k)] < at[("done", k - 1)]]
    if read_ahead == "on":
        assert len(overlapped) >= n - 2, events
    else:
        assert overlapped == [], events
    for k in range(2, n):  # not before the worker took frame k-1, i.e. after frame k-2 was done
        assert at[("read", k)] > at[("done", k - 2)], events


def test_raw_frames_and_size_from_start(engine, clip):
    with TestClient(app_for(engine)) as client, client.websocket_connect("/v1/track") as ws:
        start(ws, width=W, height=H)
        ws.send_json({"type": "prompt", "obj_id": 3, "points": [[40, 48]], "labels": [1]})
        recv(ws, "ack")
        ws.send_bytes(encode_raw_frame(clip[0]))
        masks = recv(ws, "masks")
        assert masks["objects"][0]["rle"]["size"] == [H, W]
        assert set(masks["timings"]) == {"queue_ms", "decode_ms", "prepare_ms", "track_ms", "store_ms", "total_ms"}


def test_malformed_messages_get_errors_and_the_session_lives_on(engine, clip):
    with TestClient(app_for(engine)) as client, client.websocket_connect("/v1/track") as ws:
        ws.send_bytes(png(clip[0]))
        assert recv(ws, "error")["code"] == "not_started"
        start(ws)
        for bad, code in [
            ("not json", "bad_message"),
            (json.dumps([1, 2]), "bad_message"),
            (json.dumps({"type": "dance"}), "bad_message"),
            (json.dumps({"type": "prompt", "obj_id": 1, "points": [[1, 1]], "labels": [1], "frame": "current"}),
             "bad_prompt"),
        ]:
            ws.send_text(bad)
            assert recv(ws, "error")["code"] == code
        ws.send_bytes(b"\x89PNG\r\n\x1a\n garbage")
        assert recv(ws, "error")["code"] == "bad_frame"
        ws.send_bytes(png(clip[0]))
        assert recv(ws, "masks")["frame_idx"] == 0
        for prompt, text in [
            ({"obj_id": 1, "points": [[500, 10]], "labels": [1]}, "outside"),
            ({"obj_id": 1, "points": [[1, 1], [2, 2]], "labels": [1]}, "labels"),
            ({"obj_id": 1, "box": [1, 2, 3]}, "box"),
            ({"obj_id": "one", "points": [[1, 1]], "labels": [1]}, "integer"),
            ({"obj_id": 1, "points": [[1, 1]], "labels": [1], "frame": "later"}, "next"),
        ]:
            ws.send_json({"type": "prompt", **prompt})
            err = recv(ws, "error")
            assert err["code"] == "bad_prompt" and text in err["detail"], err
        ws.send_bytes(png(clip[1][:50]))
        assert recv(ws, "error")["code"] == "bad_frame"
        ws.send_json({"type": "remove_object", "obj_id": 42})
        assert recv(ws, "error")["code"] == "unknown_object"
        ws.send_json({"type": "ping"})
        assert recv(ws, "pong")
        ws.send_bytes(png(clip[1]))
        assert recv(ws, "masks")["frame_idx"] == 1


def test_images_mode_takes_images_of_different_sizes(engine, model):
    """Prompts are in the pixels of the image they come before; each image's masks come back at its own size."""
    a, b, c = (synthetic_clip(1, h, w, seed=s)[0] for h, w, s in ((H, W, 5), (60, 100, 6), (120, 80, 7)))
    tracker = VideoTracker(model)
    state = tracker.new_state(0, 0, mode="images")
    tracker.add_prompt(state, 1, box=[20, 20, 70, 80])
    expected = [tracker.track(state, a), tracker.track(state, b)]
    tracker.add_prompt(state, 2, points=[[40, 90]], labels=[1])
    expected.append(tracker.track(state, c))
    with TestClient(app_for(engine)) as client, client.websocket_connect("/v1/track") as ws:
        start(ws, mode="images")
        ws.send_json({"type": "prompt", "obj_id": 1, "box": [20, 20, 70, 80]})
        recv(ws, "ack")
        got = []
        for image in (a, b):
            ws.send_bytes(png(image))
            got.append(recv(ws, "masks"))
        # y = 90 is off b (100x60) but on c (80x120): a prompt is checked against the image it comes before
        ws.send_json({"type": "prompt", "obj_id": 2, "points": [[40, 90]], "labels": [1]})
        recv(ws, "ack")
        ws.send_json({"type": "prompt", "obj_id": 3, "points": [[95, 10]], "labels": [1]})  # off c: dropped
        recv(ws, "ack")
        ws.send_bytes(png(c))
        dropped = recv(ws, "error")
        assert dropped["code"] == "bad_prompt" and "outside the 80x120 image" in dropped["detail"]
        got.append(recv(ws, "masks"))
    for msg, exp, image in zip(got, expected, (a, b, c)):
        assert [o["obj_id"] for o in msg["objects"]] == [o.obj_id for o in exp.objects]
        for o, e in zip(msg["objects"], exp.objects):
            assert o["rle"]["size"] == list(image.shape[:2])
            np.testing.assert_array_equal(decode_rle(o["rle"]), e.mask)


def test_images_mode_takes_a_mask_prompt_of_the_next_images_size(engine, model):
    from model_core.mask_ops import encode_rle

    a, c = synthetic_clip(1, H, W, seed=5)[0], synthetic_clip(1, 120, 80, seed=7)[0]
    mask = np.zeros((120, 80), bool)
    mask[30:90, 20:60] = True
    tracker = VideoTracker(model)
    state = tracker.new_state(0, 0, mode="images")
    tracker.add_prompt(state, 1, points=[[40, 48]], labels=[1])
    tracker.track(state, a)
    tracker.add_prompt(state, 4, mask=mask)
    expected = tracker.track(state, c).by_id()[4]
    with TestClient(app_for(engine)) as client, client.websocket_connect("/v1/track") as ws:
        start(ws, mode="images")
        ws.send_json({"type": "prompt", "obj_id": 1, "points": [[40, 48]], "labels": [1]})
        recv(ws, "ack")
        ws.send_bytes(png(a))
        recv(ws, "masks")
        ws.send_json({"type": "prompt", "obj_id": 4, "mask": encode_rle(mask[None])[0]})
        recv(ws, "ack")
        ws.send_bytes(png(c))
        got = {o["obj_id"]: o for o in recv(ws, "masks")["objects"]}
    np.testing.assert_array_equal(decode_rle(got[4]["rle"]), expected.mask)


def test_video_mode_refuses_a_frame_of_another_size_and_lives_on(engine, clip):
    with TestClient(app_for(engine)) as client, client.websocket_connect("/v1/track") as ws:
        start(ws)
        ws.send_bytes(png(clip[0]))
        recv(ws, "masks")
        ws.send_bytes(png(cv2.resize(clip[1], (W // 2, H // 2))))
        err = recv(ws, "error")
        assert err["code"] == "bad_frame" and f"the session's frames are {W}x{H}" in err["detail"]
        assert "mode 'images'" in err["detail"]
        ws.send_bytes(png(clip[1]))
        assert recv(ws, "masks")["frame_idx"] == 1


def test_resume_needs_the_same_key_and_token(engine, clip):
    keys = {"alice": "key-alice-123", "bob": "key-bob-456"}
    app = app_for(engine, api_keys=",".join(hash_key(k) for k in keys.values()))
    with TestClient(app) as client:
        with pytest.raises(Exception):
            with client.websocket_connect("/v1/track") as ws:  # no key
                assert recv(ws, "error")["code"] == "unauthorized"
                ws.receive_json()
        alice = {"Authorization": f"Bearer {keys['alice']}"}
        with client.websocket_connect("/v1/track", headers=alice) as ws:
            hello = start(ws)
            ws.send_json({"type": "prompt", "obj_id": 1, "points": [[40, 48]], "labels": [1]})
            recv(ws, "ack")
            ws.send_bytes(png(clip[0]))
            recv(ws, "masks")
        sid, token = hello["session_id"], hello["resume_token"]
        with client.websocket_connect(f"/v1/track?api_key={keys['bob']}") as ws:
            ws.send_json({"type": "resume", "session_id": sid, "resume_token": token})
            assert recv(ws, "error")["code"] == "forbidden"
        with client.websocket_connect("/v1/track", headers=alice) as ws:
            ws.send_json({"type": "resume", "session_id": sid, "resume_token": "wrong"})
            assert recv(ws, "error")["code"] == "forbidden"
            ws.send_json({"type": "resume", "session_id": sid, "resume_token": token})
            again = recv(ws, "session")
            assert again["resumed"] and again["frame_idx"] == 1 and again["objects"] == [1]
            ws.send_bytes(png(clip[1]))
            assert recv(ws, "masks")["frame_idx"] == 1
            ws.send_json({"type": "close"})
            recv(ws, "closed")
        with client.websocket_connect("/v1/track", headers=alice) as ws:
            ws.send_json({"type": "resume", "session_id": sid, "resume_token": token})
            assert recv(ws, "error")["code"] == "not_found"


def test_sessions_per_key_are_limited(engine):
    with TestClient(app_for(engine, track_sessions_per_key=1)) as client:
        with client.websocket_connect("/v1/track") as first:
            start(first)
            with client.websocket_connect("/v1/track") as second:
                second.send_json({"type": "start"})
                assert recv(second, "error")["code"] == "limit"


@pytest.mark.parametrize("policy,read_ahead", [("reject", "auto"), ("drop_oldest", "auto"), ("drop_oldest", "on")])
def test_a_flooding_client_gets_the_backpressure_policy(engine, clip, policy, read_ahead):
    """drop_oldest with read ahead: the frame being read may be the one dropped."""
    app = app_for(engine, track_queue_frames=2, track_backpressure=policy, track_read_ahead=read_ahead)
    with TestClient(app) as client:
        with client.websocket_connect("/v1/track") as ws:
            start(ws)
            ws.send_json({"type": "prompt", "obj_id": 1, "points": [[40, 48]], "labels": [1]})
            recv(ws, "ack")
            n = 12
            for i in range(n):
                ws.send_bytes(png(clip[i % len(clip)]))
            masks, notes = [], []
            while len(masks) + sum(len(x["seq"]) if isinstance(x["seq"], list) else 1 for x in notes) < n:
                msg = ws.receive_json()
                (masks if msg["type"] == "masks" else notes).append(msg)
            expected_note = "busy" if policy == "reject" else "dropped"
            assert notes and all(x["type"] == expected_note for x in notes)
            assert [m["frame_idx"] for m in masks] == list(range(len(masks)))  # consecutive, in order
            assert len(masks) < n
            assert engine.metrics.value("sam2_dropped_frames_total") > 0


def test_a_flooding_client_never_has_more_than_one_frame_read_ahead(engine, clip, caplog):
    """Frames dropped while being read (drop_oldest) finish their read in its thread: until then nothing else is
    read ahead, so reads beyond the current frame's stay at one; undecodable ones are told and logged nowhere."""
    import threading
    import time as _time

    app = app_for(engine, track_queue_frames=2, track_backpressure="drop_oldest", track_read_ahead="on")
    sessions = app.state.track_sessions
    read, lock, running = sessions.read_frame, threading.Lock(), [0, 0]  # reads now, most at once

    def slow_read(data):
        with lock:
            running[0] += 1
            running[1] = max(running)
        try:
            _time.sleep(0.03)
            return read(data)
        finally:
            with lock:
                running[0] -= 1

    sessions.read_frame = slow_read
    n = 18
    with TestClient(app) as client, client.websocket_connect("/v1/track") as ws:
        start(ws)
        ws.send_json({"type": "prompt", "obj_id": 1, "points": [[40, 48]], "labels": [1]})
        recv(ws, "ack")
        for i in range(n):
            ws.send_bytes(png(clip[i % len(clip)]) if i % 3 else b"\x89PNG\r\n\x1a\n garbage")
        answered = 0
        while answered < n:
            msg = ws.receive_json()
            answered += len(msg["seq"]) if msg["type"] == "dropped" else 1
            assert msg["type"] in ("masks", "dropped") or msg.get("code") == "bad_frame", msg
    assert 1 <= running[1] <= 2
    assert "never retrieved" not in caplog.text


def test_a_store_outage_during_remove_object_and_reset_is_reported(engine, clip):
    from service.session_store import StoreUnavailable

    app = app_for(engine)
    with TestClient(app) as client, client.websocket_connect("/v1/track") as ws:
        start(ws)
        ws.send_json({"type": "prompt", "obj_id": 1, "points": [[40, 48]], "labels": [1]})
        recv(ws, "ack")
        ws.send_bytes(png(clip[0]))
        recv(ws, "masks")
        store = app.state.track_sessions.store
        working = store.write

        async def down(*args, **kwargs):
            raise StoreUnavailable("the store is down")

        store.write = down
        ws.send_json({"type": "remove_object", "obj_id": 1})
        assert ws.receive_json()["code"] == "store_unavailable"  # before the ack, as for frames
        assert recv(ws, "ack")["for"] == "remove_object"
        store.write = working
        ws.send_json({"type": "reset"})
        assert ws.receive_json()["type"] == "store_recovered"
        assert recv(ws, "ack")["for"] == "reset"
        store.write = down
        ws.send_json({"type": "reset"})
        assert ws.receive_json()["code"] == "store_unavailable"
        assert recv(ws, "ack")["for"] == "reset"


def test_concurrent_sessions_are_tracked_together_and_each_gets_its_own_masks(model, clip):
    """Four sessions streaming at once share tracking steps: 1-3 objects, one starting two frames late, one with a
    correction on the current frame, one that drops its socket after frame 3 and resumes on a new one."""
    import threading

    scripts = [
        {0: [("next", dict(obj_id=1, points=[[40, 48]], labels=[1]))]},
        {0: [("next", dict(obj_id=1, box=[90, 10, 130, 50])), ("next", dict(obj_id=2, points=[[30, 30]], labels=[1]))]},
        {0: [("next", dict(obj_id=1, points=[[60, 40]], labels=[1]))],
         3: [("next", dict(obj_id=2, points=[[120, 70]], labels=[1]))],
         (4, "after"): [("current", dict(obj_id=1, points=[[70, 50]], labels=[0]))]},
        {0: [("next", dict(obj_id=7, points=[[100, 60]], labels=[1]))]},
    ]
    offsets, resume_after = [0, 0, 0, 2], {0: 3}
    expected = [direct_run(model, clip[o:], sc) for sc, o in zip(scripts, offsets)]
    # max_wait lets the first frames of the sessions meet; steady state needs no wait (they queue behind each other)
    with running_engine(model, max_batch=8, max_wait_ms=50) as eng, TestClient(app_for(eng)) as client:
        got: list[list] = [[] for _ in scripts]
        go = threading.Barrier(len(scripts))

        def session(k: int) -> None:
            frames = clip[offsets[k]:]
            ws_cm = client.websocket_connect("/v1/track")
            ws = ws_cm.__enter__()
            hello = start(ws)
            go.wait()
            for i, frame in enumerate(frames):
                if resume_after.get(k) == i:  # drop the socket, resume the session on a new one
                    ws_cm.__exit__(None, None, None)
                    ws_cm = client.websocket_connect("/v1/track")
                    ws = ws_cm.__enter__()
                    ws.send_json({"type": "resume", "session_id": hello["session_id"],
                                  "resume_token": hello["resume_token"]})
                    assert recv(ws, "session")["frame_idx"] == i
                for _, kw in scripts[k].get(i, []):
                    ws.send_json({"type": "prompt", **kw})
                    recv(ws, "ack")
                ws.send_bytes(png(frame))
                got[k].append(recv(ws, "masks"))
                for _, kw in scripts[k].get((i, "after"), []):
                    ws.send_json({"type": "prompt", "frame": "current", **kw})
                    got[k].append(recv(ws, "masks"))
            ws_cm.__exit__(None, None, None)

        threads = [threading.Thread(target=session, args=(k,)) for k in range(len(scripts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        batches = eng.metrics.value("sam2_step_batch_count", {"kind": "track"})
        frames = eng.metrics.value("sam2_step_batch_sum", {"kind": "track"})
    assert frames == sum(len(clip) - o for o in offsets)
    assert batches < frames  # some steps carried several sessions' frames
    for k, (msgs, exp) in enumerate(zip(got, expected)):
        assert len(msgs) == len(exp), k
        for msg, e in zip(msgs, exp):
            e_objects = e.objects if hasattr(e, "objects") else [e]
            assert [o["obj_id"] for o in msg["objects"]] == [o.obj_id for o in e_objects]
            for o, eo in zip(msg["objects"], e_objects):
                np.testing.assert_array_equal(decode_rle(o["rle"]), eo.mask)


def test_a_short_lived_token_opens_the_socket_without_showing_the_key(engine, clip):
    import time as _time

    from service import ws_tokens

    keys = {"alice": "key-alice-123", "bob": "key-bob-456"}
    app = app_for(engine, api_keys=",".join(hash_key(k) for k in keys.values()), ws_token_ttl=30)
    with TestClient(app) as client:
        assert client.post("/v1/track/token").status_code == 401  # minting needs the key
        r = client.post("/v1/track/token", headers={"X-API-Key": keys["alice"]})
        assert r.status_code == 200 and r.json()["expires_in"] == 30
        token = r.json()["token"]
        assert keys["alice"] not in token and hash_key(keys["alice"]) not in token
        with client.websocket_connect(f"/v1/track?token={token}") as ws:
            hello = start(ws)
            ws.send_json({"type": "prompt", "obj_id": 1, "points": [[40, 48]], "labels": [1]})
            recv(ws, "ack")
            ws.send_bytes(png(clip[0]))
            assert recv(ws, "masks")["frame_idx"] == 0
        # the session belongs to alice's key: bob's token cannot resume it, alice's key can
        bob = client.post("/v1/track/token", headers={"X-API-Key": keys["bob"]}).json()["token"]
        with client.websocket_connect(f"/v1/track?token={bob}") as ws:
            ws.send_json({"type": "resume", "session_id": hello["session_id"], "resume_token": hello["resume_token"]})
            assert recv(ws, "error")["code"] == "forbidden"
        with client.websocket_connect(f"/v1/track?api_key={keys['alice']}") as ws:
            ws.send_json({"type": "resume", "session_id": hello["session_id"], "resume_token": hello["resume_token"]})
            assert recv(ws, "session")["resumed"]
        secret = app.state.ws_token_secret
        expired = ws_tokens.mint(secret, hash_key(keys["alice"]), 30, now=_time.time() - 60)
        forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        other = ws_tokens.mint(b"another replica's secret " * 2, hash_key(keys["alice"]), 30)
        for bad in (expired, forged, other, "garbage"):
            with client.websocket_connect(f"/v1/track?token={bad}") as ws:
                ws.send_json({"type": "start"})
                msg = ws.receive_json()  # a wrongly accepted token would get "session" here
                assert (msg["type"], msg.get("code")) == ("error", "unauthorized"), bad


def test_tokens_verify_across_replicas_that_share_the_secret():
    from service import ws_tokens

    secret = b"s" * 32
    token = ws_tokens.mint(secret, "tenant-a", 60)
    assert ws_tokens.verify(secret, token) == "tenant-a"
    assert ws_tokens.verify(b"t" * 32, token) is None
    assert ws_tokens.verify(secret, token, now=10**12) is None  # expired
