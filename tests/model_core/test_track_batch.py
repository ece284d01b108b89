"""VideoTracker.track_batch: several sessions stepped together give each session what it gets alone."""

import numpy as np
import pytest
import torch

from model_core.video_tracker import VideoTracker
from tests.fixtures import synthetic_clip
from tests.model_core.video_fixtures import tracking_model

H, W = 96, 160

# Three sessions: different object counts, prompts arriving at different frames, a correction on the
# current frame, one session that starts late (its first frames are other sessions' steady state).
SCRIPTS = {
    "a": {0: [(1, dict(points=[[40, 48]], labels=[1]))]},
    "b": {0: [(1, dict(box=[90, 10, 130, 50])), (2, dict(points=[[30, 30]], labels=[1]))],
          3: [(3, dict(points=[[120, 70]], labels=[1]))]},
    "c": {2: [(1, dict(points=[[60, 40]], labels=[1]))], (4, "current"): [(1, dict(points=[[70, 50]], labels=[0]))]},
}
START = {"a": 0, "b": 0, "c": 3}


@pytest.fixture(scope="module")
def model():
    return tracking_model()


def run(tracker, clip, together: bool):
    """Every session's results per frame; together: the sessions of each tick in one track_batch."""
    states = {k: tracker.new_state(H, W) for k in SCRIPTS}
    out = {k: [] for k in SCRIPTS}
    for t in range(len(clip)):
        live = [k for k in SCRIPTS if t >= START[k]]
        for k in live:
            i = t - START[k]
            for obj_id, kw in SCRIPTS[k].get(i, []):
                tracker.add_prompt(states[k], obj_id, **kw)
        frames = [clip[t] for _ in live]
        results = (tracker.track_batch([states[k] for k in live], frames) if together
                   else [tracker.track(states[k], f) for k, f in zip(live, frames)])
        for k, r in zip(live, results):
            out[k].append(r)
            for obj_id, kw in SCRIPTS[k].get((t - START[k], "current"), []):
                out[k].append(tracker.add_prompt(states[k], obj_id, frame="current", **kw))
    return out


def test_sessions_stepped_together_get_what_they_get_alone(model):
    clip = synthetic_clip(10, H, W)
    tracker = VideoTracker(model)
    alone, together = run(tracker, clip, False), run(tracker, clip, True)
    for k in SCRIPTS:
        assert len(alone[k]) == len(together[k])
        for a, b in zip(alone[k], together[k]):
            a_objs = a.objects if hasattr(a, "objects") else [a]
            b_objs = b.objects if hasattr(b, "objects") else [b]
            assert [o.obj_id for o in a_objs] == [o.obj_id for o in b_objs]
            for oa, ob in zip(a_objs, b_objs):
                np.testing.assert_array_equal(oa.mask, ob.mask)
                assert (oa.logits - ob.logits).abs().max().item() <= 1e-5
                assert oa.present == ob.present
    assert any(o.present for r in together["b"] for o in r.objects)


def test_one_frame_per_session_per_batch(model):
    tracker = VideoTracker(model)
    state = tracker.new_state(H, W)
    frame = synthetic_clip(1, H, W)[0]
    with pytest.raises(ValueError, match="one frame per batch"):
        tracker.track_batch([state, state], [frame, frame])
