"""VideoTracker: streaming frames, prompts at any time, bounded memory, independent images."""

import os

import numpy as np
import pytest
import torch

from model_core.state_codec import state_to_bytes
from model_core.video_predictor import VideoPredictor
from model_core.video_tracker import VideoTracker
from tests.model_core.video_fixtures import tracking_model
from tests.fixtures import synthetic_clip

H, W = 96, 160


@pytest.fixture(scope="module")
def model():
    return tracking_model()


@pytest.fixture(scope="module")
def clip():
    return synthetic_clip(18, H, W)


def _stream(tracker, frames, prompts, num_frames=None):
    """prompts: {frame_idx: [(obj_id, kwargs)]} sent as frame='next' before that frame."""
    state = tracker.new_state(H, W, num_frames=num_frames)
    out = []
    for i, frame in enumerate(frames):
        for obj_id, kw in prompts.get(i, []):
            tracker.add_prompt(state, obj_id, **kw)
        out.append(tracker.track(state, frame))
    return state, out


def test_streaming_equals_the_offline_predictor_on_a_forward_run(model, clip):
    offline = VideoPredictor(model, progress=False)
    vstate = offline.init_state(clip)
    offline.add_new_points_or_box(vstate, 0, 1, points=[[40, 48]], labels=[1])
    offline.add_new_points_or_box(vstate, 0, 2, box=[90, 10, 130, 50])
    expected = {f: m for f, _, m in offline.propagate_in_video(vstate)}

    prompts = {0: [(1, dict(points=[[40, 48]], labels=[1])), (2, dict(box=[90, 10, 130, 50]))]}
    _, results = _stream(VideoTracker(model), clip, prompts, num_frames=len(clip))
    for res in results:
        assert [o.obj_id for o in res.objects] == [1, 2] and all(o.present for o in res.objects)
        for i, obj in enumerate(res.objects):
            got = torch.nn.functional.interpolate(obj.logits[None], size=(H, W), mode="bilinear", align_corners=False)
            assert (got[0] - expected[res.frame_idx][i]).abs().max() <= 1e-5
            np.testing.assert_array_equal(obj.mask, (expected[res.frame_idx][i, 0] > 0).numpy())


def test_a_new_object_mid_stream_leaves_the_others_unchanged(model, clip):
    base = {0: [(1, dict(points=[[40, 48]], labels=[1]))]}
    _, alone = _stream(VideoTracker(model), clip[:10], base)
    joined = dict(base)
    joined[5] = [(7, dict(box=[90, 10, 130, 50]))]
    _, together = _stream(VideoTracker(model), clip[:10], joined)
    for a, b in zip(alone, together):
        assert torch.equal(a.by_id()[1].logits, b.by_id()[1].logits)
    assert [r.frame_idx for r in together if 7 in r.by_id()] == list(range(5, 10))


def test_correction_on_the_current_frame_matches_meta_semantics(model, clip):
    tracker = VideoTracker(model)
    state, _ = _stream(tracker, clip[:6], {0: [(1, dict(points=[[40, 48]], labels=[1]))]}, num_frames=len(clip))
    corrected = tracker.add_prompt(state, 1, points=[[60, 40]], labels=[0], frame="current")

    offline = VideoPredictor(model, progress=False)
    vstate = offline.init_state(clip)
    offline.add_new_points_or_box(vstate, 0, 1, points=[[40, 48]], labels=[1])
    list(offline.propagate_in_video(vstate, max_frame_num_to_track=5))
    _, _, masks = offline.add_new_points_or_box(vstate, 5, 1, points=[[60, 40]], labels=[0], clear_old_points=False)
    got = torch.nn.functional.interpolate(corrected.logits[None], size=(H, W), mode="bilinear", align_corners=False)
    assert corrected.present and (got[0] - masks[0]).abs().max() <= 1e-5
    # a second click on the same frame accumulates with the first
    again = tracker.add_prompt(state, 1, points=[[20, 20]], labels=[1], frame="current")
    assert state.frame_points[1][1].shape[0] == 2
    assert (again.logits - corrected.logits).abs().max() > 1e-3


def test_memory_is_bounded_on_a_long_stream(model):
    tracker = VideoTracker(model)
    frames = synthetic_clip(24, H, W, seed=2)
    state = tracker.new_state(H, W)
    tracker.add_prompt(state, 1, points=[[40, 48]], labels=[1])
    tracker.add_prompt(state, 2, box=[90, 10, 130, 50])
    sizes, rss = {}, {}
    for i in range(500):
        tracker.track(state, frames[i % len(frames)])
        if i + 1 in (50, 500):
            sizes[i + 1] = len(state_to_bytes(state))
        if i + 1 in (100, 500):
            rss[i + 1] = _rss_bytes()
    assert abs(sizes[500] - sizes[50]) < 0.01 * sizes[50]  # one more memory entry would be ~5%; digits grow
    for track in state.objects.values():
        assert len(track.non_cond) <= 16 and sum(e.maskmem is not None for e in track.non_cond.values()) <= 7
    assert rss[500] - rss[100] < 30 * 2**20, f"RSS grew by {(rss[500] - rss[100]) / 2**20:.1f} MiB"


def _rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_independent_images_share_memory(model):
    """Ultralytics' dynamic interactive mode: prompts add memory, later images use memory alone."""
    tracker = VideoTracker(model)
    a, b = synthetic_clip(2, H, W, seed=5)
    state = tracker.new_state(H, W, mode="images", max_obj_num=2)
    tracker.add_prompt(state, 1, box=[20, 20, 70, 80], update_memory=True)
    first = tracker.track(state, a)
    assert list(state.objects[1].cond) == [0]
    second = tracker.track(state, b)
    assert [o.obj_id for o in second.objects] == [1] and second.objects[0].mask.shape == (H, W)
    assert not state.objects[1].non_cond  # tracked images add no memory in this mode
    tracker.add_prompt(state, 2, points=[[100, 30]], labels=[1], update_memory=False)
    third = tracker.track(state, a)
    assert {o.obj_id for o in third.objects} == {1, 2} and not state.objects[2].cond
    assert torch.equal(third.by_id()[1].logits, tracker.track(state, a).by_id()[1].logits)
    with pytest.raises(ValueError, match="at most 2 objects"):
        tracker.add_prompt(state, 3, points=[[10, 10]], labels=[1])
    assert first.objects[0].obj_id == 1


def test_bad_input_is_refused_clearly(model):
    tracker = VideoTracker(model)
    state = tracker.new_state(H, W)
    with pytest.raises(ValueError, match="send a frame first"):
        tracker.add_prompt(state, 1, points=[[1, 1]], labels=[1], frame="current")
    with pytest.raises(ValueError, match="labels"):
        tracker.add_prompt(state, 1, points=[[1, 1], [2, 2]], labels=[1])
    with pytest.raises(ValueError, match="box"):
        tracker.add_prompt(state, 1, box=[1, 2, 3])
    with pytest.raises(ValueError, match="session is 160x96"):
        tracker.track(state, np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(KeyError):
        tracker.remove_object(state, 9)


def test_remove_and_reset(model, clip):
    tracker = VideoTracker(model)
    state, _ = _stream(tracker, clip[:3], {0: [(1, dict(points=[[40, 48]], labels=[1])), (2, dict(box=[90, 10, 130, 50]))]})
    tracker.remove_object(state, 1)
    assert [o.obj_id for o in tracker.track(state, clip[3]).objects] == [2]
    tracker.reset(state)
    assert tracker.track(state, clip[4]).objects == [] and state.frame_idx == 5


def test_images_of_different_sizes_share_memory(model):
    """Images mode: each image has its own size; prompts are in that image's pixels, masks come back at its size."""
    tracker = VideoTracker(model)
    a = synthetic_clip(1, H, W, seed=5)[0]
    b = synthetic_clip(1, 60, 100, seed=6)[0]
    c = synthetic_clip(1, 120, 80, seed=7)[0]
    state = tracker.new_state(0, 0, mode="images", max_obj_num=2)
    tracker.add_prompt(state, 1, box=[20, 20, 70, 80])
    assert tracker.track(state, a).objects[0].mask.shape == (H, W)
    found = tracker.track(state, b)  # object 1 from memory, on a smaller image
    assert (state.height, state.width) == (60, 100) and found.objects[0].mask.shape == (60, 100)
    tracker.add_prompt(state, 2, points=[[40, 90]], labels=[1])  # pixels of c, not of b
    both = tracker.track(state, c).by_id()
    assert both[1].mask.shape == both[2].mask.shape == (120, 80)

    alone = tracker.new_state(120, 80, mode="images")  # a prompted object ignores memory: same as on c alone
    tracker.add_prompt(alone, 2, points=[[40, 90]], labels=[1])
    assert torch.equal(tracker.track(alone, c).by_id()[2].logits, both[2].logits)


def test_a_prompt_waiting_for_an_image_of_unknown_size_survives_the_state_codec(model):
    from model_core.state_codec import state_from_bytes

    tracker = VideoTracker(model)
    c = synthetic_clip(1, 120, 80, seed=7)[0]
    state = tracker.new_state(H, W, mode="images")
    tracker.add_prompt(state, 2, points=[[40, 90]], labels=[1])
    assert state.pending[2].pixels
    restored, _ = state_from_bytes(state_to_bytes(state))
    assert restored.pending[2].pixels
    fresh = tracker.new_state(120, 80, mode="images")
    tracker.add_prompt(fresh, 2, points=[[40, 90]], labels=[1])
    assert torch.equal(tracker.track(restored, c).objects[0].logits, tracker.track(fresh, c).objects[0].logits)


def test_a_video_still_refuses_a_frame_of_another_size(model):
    tracker = VideoTracker(model)
    state = tracker.new_state(0, 0)  # size from the first frame
    tracker.add_prompt(state, 1, points=[[40, 48]], labels=[1])
    tracker.track(state, synthetic_clip(1, H, W)[0])
    assert (state.height, state.width) == (H, W)
    with pytest.raises(ValueError, match="only mode='images' takes images of different sizes"):
        tracker.track(state, np.zeros((60, 100, 3), np.uint8))
