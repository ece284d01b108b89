"""The shared tracking step: objects of different sessions, batched in one call, get what each gets alone."""

import torch

from model_core import VideoTracker
from model_core.memory_bank import group_by_layout
from model_core.tracking_step import FrameFeatures, frame_features, track_objects
from model_core.transforms import preprocess
from tests.fixtures import synthetic_clip
from tests.model_core.video_fixtures import tracking_model

H, W = 96, 160


def test_one_step_over_two_sessions_equals_each_session_alone():
    model = tracking_model()
    tracker = VideoTracker(model)
    clip = synthetic_clip(6, H, W)
    a, b = tracker.new_state(H, W), tracker.new_state(H, W)
    tracker.add_prompt(a, 1, points=[[40, 48]], labels=[1])
    tracker.add_prompt(b, 7, box=[90, 10, 130, 50])
    for i in range(2):
        tracker.track(a, clip[i])
        tracker.track(b, clip[3 + i])
    x_a, x_b = (preprocess(f, model.image_size, resize=tracker.resize)[None] for f in (clip[2], clip[5]))
    with torch.inference_mode():
        pairs = tracker.memory_selections(a, a.frame_idx) + tracker.memory_selections(b, b.frame_idx)
        [(tracks, sels)] = group_by_layout(pairs)  # equal layouts: one batch across the two sessions
        feats = FrameFeatures.cat([frame_features(model, x_a), frame_features(model, x_b)])
        batched = track_objects(model, feats, sels)
    alone = [tracker.track(a, clip[2]).objects[0], tracker.track(b, clip[5]).objects[0]]
    assert [t.obj_id for t in tracks] == [1, 7]
    for i, (state, obj) in enumerate(zip((a, b), alone)):
        torch.testing.assert_close(batched.heads.low_res[i], obj.logits, atol=1e-4, rtol=1e-4)
        kept = state.objects[obj.obj_id].non_cond[state.frame_idx - 1]
        torch.testing.assert_close(batched.memory_entry(i).maskmem, kept.maskmem, atol=1e-4, rtol=1e-4)
