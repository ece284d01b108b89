"""A stateful property-based test of /v1/track (hypothesis state machine) against the real app: start, prompt,
frame, remove, reset, resume on another connection, close and garbage, in any order.

Invariants: no `internal` error ever; frames answered in order with the expected index; at most one live writer
(the connection a session was taken from is told `session_moved`); every acknowledged prompt survives a resume
(its object is tracked on the next frame). Bounded for CI: a few dozen short runs.
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.service.test_track import H, W, app_for, clip, engine, model, png  # noqa: F401 - fixtures

CLIENT_CODES = {"bad_message", "bad_prompt", "bad_frame", "unknown_object", "not_started", "limit", "busy"}

junk = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                max_size=3), max_leaves=6)


@pytest.fixture(scope="module")
def track_app(engine):
    return app_for(engine, track_max_pending_prompts=8)


def machine_for(app, frames):
    class TrackProtocol(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.client = TestClient(app).__enter__()
            self.ws = None
            self.hello = None  # the session's first answer: id and token
            self.frame_idx = 0
            self.objects: set[int] = set()  # acknowledged objects, tracked or waiting for the first frame
            self.sized = False

        # ---- helpers ---------------------------------------------------------------------------------

        def connect(self):
            ws = self.client.websocket_connect("/v1/track")
            return ws.__enter__()

        def receive(self, ws=None) -> dict:
            msg = (ws or self.ws).receive_json()
            assert not (msg["type"] == "error" and msg["code"] in ("internal", "session_moved")), msg
            return msg

        def answer(self, *kinds: str) -> dict:
            """The next message that is not a store note; an error must be a client error."""
            while True:
                msg = self.receive()
                if msg["type"] == "store_recovered":
                    continue
                if msg["type"] == "error":
                    assert msg["code"] in CLIENT_CODES, msg
                assert msg["type"] in (*kinds, "error"), msg
                return msg

        # ---- rules -------------------------------------------------------------------------------------

        @precondition(lambda self: self.hello is None)
        @rule(sized=st.booleans())
        def start(self, sized):
            if self.ws is None:
                self.ws = self.connect()
            self.ws.send_json({"type": "start", **({"width": W, "height": H} if sized else {})})
            msg = self.answer("session")
            assert msg["type"] == "session", msg
            self.hello, self.frame_idx, self.objects, self.sized = msg, 0, set(), sized

        @precondition(lambda self: self.hello is not None)
        @rule(obj_id=st.integers(1, 3), x=st.integers(0, W), y=st.integers(0, H), label=st.sampled_from([0, 1]))
        def prompt(self, obj_id, x, y, label):
            self.ws.send_json({"type": "prompt", "obj_id": obj_id, "points": [[x, y]], "labels": [label]})
            msg = self.answer("ack")
            if msg["type"] == "ack":
                self.objects.add(obj_id)
            else:
                assert msg["code"] == "limit", msg

        @precondition(lambda self: self.hello is not None)
        @rule(fields=st.dictionaries(st.sampled_from(["obj_id", "points", "labels", "box", "mask", "frame",
                                                      "update_memory", "type"]), junk, max_size=4))
        def bad_prompt(self, fields):
            self.ws.send_text(json.dumps({"type": "prompt", **fields}, allow_nan=True))
            msg = self.answer("ack", "masks")
            if msg["type"] != "error":  # junk that happens to be a valid prompt
                self.objects.add(fields["obj_id"])

        @precondition(lambda self: self.hello is not None)
        @rule(i=st.integers(0, 3))
        def frame(self, i):
            self.ws.send_bytes(frames[i])
            msg = self.answer("masks")
            while msg["type"] == "error" and msg["code"] == "bad_prompt":  # an early prompt off the frame: none here
                msg = self.answer("masks")
            assert msg["type"] == "masks", msg
            assert msg["frame_idx"] == self.frame_idx
            assert {o["obj_id"] for o in msg["objects"]} == self.objects
            self.frame_idx += 1
            self.sized = True

        @precondition(lambda self: self.hello is not None)
        @rule(obj_id=st.integers(1, 4))
        def remove(self, obj_id):
            self.ws.send_json({"type": "remove_object", "obj_id": obj_id})
            msg = self.answer("ack")
            assert (msg["type"] == "ack") == (obj_id in self.objects), msg
            self.objects.discard(obj_id)

        @precondition(lambda self: self.hello is not None)
        @rule()
        def reset(self):
            self.ws.send_json({"type": "reset"})
            assert self.answer("ack")["type"] == "ack"
            self.objects = set()

        @precondition(lambda self: self.hello is not None)
        @rule(drop_old=st.booleans())
        def resume_elsewhere(self, drop_old):
            new = self.connect()
            new.send_json({"type": "resume", "session_id": self.hello["session_id"],
                           "resume_token": self.hello["resume_token"]})
            msg = self.receive(new)
            assert msg["type"] == "session" and msg["frame_idx"] == self.frame_idx, msg
            assert set(msg["objects"]) <= self.objects
            old, self.ws = self.ws, new
            if not drop_old:  # the older connection may not write any more
                old.send_json({"type": "reset"})
                moved = old.receive_json()
                assert (moved["type"], moved.get("code")) == ("error", "session_moved"), moved
            old.__exit__(None, None, None)

        @precondition(lambda self: self.hello is not None)
        @rule()
        def close(self):
            self.ws.send_json({"type": "close"})
            assert self.answer("closed")["type"] == "closed"
            self.ws.__exit__(None, None, None)
            self.ws, self.hello = None, None

        @rule(data=st.one_of(st.binary(max_size=40), st.text(max_size=40), junk.map(json.dumps)))
        def garbage(self, data):
            if self.ws is None:
                self.ws = self.connect()
            (self.ws.send_bytes if isinstance(data, bytes) else self.ws.send_text)(data)
            msg = self.receive()
            if msg["type"] == "pong":
                return
            assert msg["type"] == "error" and msg["code"] in CLIENT_CODES | {"not_started"}, msg

        @invariant()
        def one_live_writer(self):
            sessions = app.state.track_sessions
            if self.hello is not None:
                live = sessions.live.get(self.hello["session_id"])
                assert live is not None and not live.moved

        def teardown(self):
            if self.ws is not None:
                self.ws.__exit__(None, None, None)
            self.client.__exit__(None, None, None)

    return TrackProtocol


def test_the_protocol_holds_its_invariants(engine, clip, track_app):
    frames = [png(clip[i]) for i in range(4)]
    machine = machine_for(track_app, frames)
    machine.TestCase.settings = settings(max_examples=10, stateful_step_count=12, deadline=None,
                                         suppress_health_check=list(HealthCheck), derandomize=True)
    machine.TestCase().runTest()
