"""Our VideoPredictor reproduces Meta's SAM2VideoPredictor (same weights, same frames, fp32)."""

import numpy as np
import pytest
import torch

from model_core.video_predictor import VideoPredictor
from tests.model_core.video_fixtures import reference_state, reference_video_predictor, restore_torch
from tests.fixtures import synthetic_clip
from tests.reference import ours_from_reference

NAME, SIZE, N, H, W = "sam2.1_hiera_tiny", 256, 12, 120, 200


def make_objects_come_and_go(model):
    """Sharpen and shift the object-score head so that, on this clip, objects are absent on some frames.

    Random weights give presence logits near +0.27 everywhere; this exercises the occlusion path
    (NO_OBJ_SCORE masks, no-object pointer and spatial embedding) with every logit >= 0.07 from 0.
    """
    head = model.sam_mask_decoder.pred_obj_score_head.layers[2]
    with torch.no_grad():
        head.weight.mul_(100.0)
        head.bias.mul_(100.0).sub_(27.0)


@pytest.fixture(scope="module")
def pair():
    ref = reference_video_predictor(NAME, SIZE)
    make_objects_come_and_go(ref)
    ours = VideoPredictor(ours_from_reference(ref, NAME, SIZE), progress=False)
    yield ref, ours
    restore_torch()


def _collect(gen):
    return {f: masks.clone() for f, _, masks in gen}


def _assert_close(expected, got, label):
    assert expected.shape == got.shape, label
    diff = (expected - got).abs().max().item()
    assert diff <= 1e-3, f"{label}: max abs logit diff {diff}"


def test_prompts_corrections_new_objects_and_reverse_match(pair, tmp_path):
    ref, ours = pair
    frames = synthetic_clip(N, H, W)
    state = ours.init_state(frames)
    tensors = [ours.frame_tensor(state, i) for i in range(N)]
    rstate = reference_state(ref, frames, tensors, tmp_path)

    def both(method, *args, **kwargs):
        e = getattr(ref, method)(rstate, *args, **kwargs)
        g = getattr(ours, method)(state, *args, **kwargs)
        return e, g

    # a click for object 1 and a box for object 2 on frame 0
    for call in [dict(frame_idx=0, obj_id=1, points=[[60, 60]], labels=[1]),
                 dict(frame_idx=0, obj_id=2, box=[110, 20, 165, 65])]:
        e, g = both("add_new_points_or_box", **call)
        assert e[1] == g[1]
        _assert_close(e[2], g[2], f"prompt {call}")

    e, g = _collect(ref.propagate_in_video(rstate)), _collect(ours.propagate_in_video(state))
    assert sorted(e) == sorted(g) == list(range(N))
    for f in e:
        _assert_close(e[f], g[f], f"first propagation, frame {f}")

    # a correction click on frame 5 for object 1 (accumulating), and object 3 joins on frame 7
    e, g = both("add_new_points_or_box", frame_idx=5, obj_id=1, points=[[95, 60]], labels=[0],
                clear_old_points=False)
    _assert_close(e[2], g[2], "correction on frame 5")
    e, g = both("add_new_points_or_box", frame_idx=7, obj_id=3, points=[[150, 90]], labels=[1])
    assert e[1] == g[1] == [1, 2, 3]
    _assert_close(e[2], g[2], "new object on frame 7")

    e, g = _collect(ref.propagate_in_video(rstate)), _collect(ours.propagate_in_video(state))
    for f in e:
        _assert_close(e[f], g[f], f"second propagation, frame {f}")
    absent = sum(bool((m <= -1000).all()) for masks in e.values() for m in masks)
    assert 0 < absent < 3 * N, "the clip should show objects both present and absent"

    # reverse from a later prompt
    e, g = both("add_new_points_or_box", frame_idx=10, obj_id=2, points=[[130, 80]], labels=[1])
    _assert_close(e[2], g[2], "prompt on frame 10")
    e = _collect(ref.propagate_in_video(rstate, start_frame_idx=10, reverse=True))
    g = _collect(ours.propagate_in_video(state, start_frame_idx=10, reverse=True))
    assert sorted(e) == sorted(g) == list(range(11))
    for f in e:
        _assert_close(e[f], g[f], f"reverse propagation, frame {f}")


def test_mask_prompt_and_removal_match(pair, tmp_path):
    ref, ours = pair
    frames = synthetic_clip(8, H, W, seed=3)
    state = ours.init_state(frames)
    rstate = reference_state(ref, frames, [ours.frame_tensor(state, i) for i in range(8)], tmp_path)
    mask = np.zeros((H, W), bool)
    mask[40:80, 30:90] = True
    e = ref.add_new_mask(rstate, 0, 4, mask)
    g = ours.add_new_mask(state, 0, 4, mask)
    _assert_close(e[2], g[2], "mask prompt")
    ref.add_new_points_or_box(rstate, 2, 5, points=[[150, 50]], labels=[1])
    ours.add_new_points_or_box(state, 2, 5, points=[[150, 50]], labels=[1])
    e, g = _collect(ref.propagate_in_video(rstate)), _collect(ours.propagate_in_video(state))
    for f in e:
        _assert_close(e[f], g[f], f"mask-prompted propagation, frame {f}")
    e = ref.remove_object(rstate, 5)
    g = ours.remove_object(state, 5)
    assert e[0] == g[0] == [4]
    assert [f for f, _ in e[1]] == [f for f, _ in g[1]]
