"""Preprocessing is the reference's own resize: fed images (not tensors), our predictors give its masks."""

import cv2
import numpy as np
import pytest
import torch

from model_core import ImagePredictor
from model_core.transforms import preprocess
from model_core.video_predictor import VideoPredictor
from tests.fixtures import synthetic_clip, synthetic_image
from tests.model_core.video_fixtures import reference_video_predictor, restore_torch
from tests.reference import fit_to_image_size, max_rel_diff, ours_from_reference, reference_model

NAME, SIZE = "sam2.1_hiera_tiny", 256


def iou(a, b):
    a, b = a > 0, b > 0
    return (a & b).sum() / max((a | b).sum(), 1)


def test_bilinear_resize_equals_the_reference_image_transform():
    from sam2.utils.transforms import SAM2Transforms

    image = synthetic_image(1080, 1920)
    expected = SAM2Transforms(resolution=SIZE, mask_threshold=0.0)(image)
    assert (preprocess(image, SIZE) - expected).abs().max().item() < 1e-5


def test_bicubic_resize_equals_the_reference_video_loader(tmp_path):
    from sam2.utils.misc import _load_img_as_tensor

    image = synthetic_image(333, 517)
    cv2.imwrite(str(tmp_path / "f.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    expected, _, _ = _load_img_as_tensor(str(tmp_path / "f.png"), SIZE)  # PIL bicubic, [0, 1]
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    got = preprocess(image, SIZE, resize="bicubic") * std + mean
    # PIL and torch round a few half-way pixels differently: at most one grey level, on few pixels
    diff = (got - expected).abs()
    assert diff.max().item() <= 1 / 255 + 1e-6 and (diff > 1e-4).float().mean().item() < 0.01


def test_unknown_resize_is_refused():
    with pytest.raises(ValueError, match="unknown resize"):
        preprocess(synthetic_image(32, 32), SIZE, resize="lanczos")


@pytest.mark.parametrize("hw", [(1080, 1920), (333, 517)], ids=["full-hd", "odd-sized"])
def test_image_predictor_on_images_matches_the_reference(hw):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    ref = reference_model(NAME, SIZE)
    theirs = fit_to_image_size(SAM2ImagePredictor(ref), SIZE)
    ours = ImagePredictor(ours_from_reference(ref, NAME, SIZE))
    h, w = hw
    image = synthetic_image(h, w)
    theirs.set_image(image)
    ours.set_image(image)
    for kw in (dict(point_coords=np.array([[w * 0.3, h * 0.5]]), point_labels=np.array([1])),
               dict(box=np.array([w * 0.5, h * 0.2, w * 0.9, h * 0.75]))):
        e_masks, _, e_low = theirs.predict(**kw, multimask_output=False)
        g_masks, _, g_low = ours.predict(**kw, multimask_output=False)
        assert max_rel_diff(torch.from_numpy(e_low), torch.from_numpy(g_low)) <= 1e-3
        assert iou(e_masks[0], g_masks[0]) >= 0.99


def clicked_and_propagated(source: str) -> tuple[dict, dict]:
    """The reference's and our VideoPredictor's logits per frame of `source`, after one click on frame 0."""
    ref = reference_video_predictor(NAME, SIZE)
    try:
        ours = VideoPredictor(ours_from_reference(ref, NAME, SIZE), progress=False)
        rstate, state = ref.init_state(source), ours.init_state(source)
        assert (rstate["video_height"], rstate["video_width"]) == (state.video_height, state.video_width)
        assert rstate["num_frames"] == state.num_frames
        for s, pred in ((rstate, ref), (state, ours)):
            pred.add_new_points_or_box(s, frame_idx=0, obj_id=1, points=[[150, 135]], labels=[1])
        expected = {f: m for f, _, m in ref.propagate_in_video(rstate)}
        return expected, {f: m for f, _, m in ours.propagate_in_video(state)}
    finally:
        restore_torch()


def test_video_predictor_on_a_jpeg_folder_matches_the_reference(tmp_path):
    for i, f in enumerate(synthetic_clip(5, 270, 480)):
        cv2.imwrite(str(tmp_path / f"{i:05d}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    expected, got = clicked_and_propagated(str(tmp_path))
    assert sorted(expected) == sorted(got) == list(range(5))
    for f in expected:
        # PIL's fixed-point filter weights put ~0.05% of pixels one grey level off ours: 1.4e-3 measured
        assert max_rel_diff(expected[f], got[f]) <= 2e-3, f"frame {f}"
        assert iou(expected[f][0, 0].numpy(), got[f][0, 0].numpy()) >= 0.99, f"frame {f}"


def test_video_predictor_on_an_mp4_matches_the_reference(tmp_path):
    """The reference reads an mp4 with decord, which scales each frame to S x S inside ffmpeg; with PyAV we run
    the same scale filter, so the model sees the same pixels and gives the same logits."""
    pytest.importorskip("decord", reason="the reference's mp4 reader (the test extra installs it)")
    pytest.importorskip("av", reason="the video extra's decoder")
    video = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 10, (480, 270))
    for f in synthetic_clip(5, 270, 480):
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    expected, got = clicked_and_propagated(video)
    assert sorted(expected) == sorted(got) == list(range(5))
    for f in expected:
        assert got[f].shape[-2:] == (270, 480)
        assert max_rel_diff(expected[f], got[f]) <= 1e-3, f"frame {f}"
        assert iou(expected[f][0, 0].numpy(), got[f][0, 0].numpy()) >= 0.99, f"frame {f}"
