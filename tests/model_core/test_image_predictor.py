"""ImagePredictor: Meta's SAM2ImagePredictor API, checked against the reference and by example."""

import numpy as np
import pytest
import torch

from model_core import ImagePredictor, build_model
from tests.fixtures import synthetic_image
from tests.reference import ours_from_reference, reference_model


def iou(a, b):
    a, b = a > 0, b > 0
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.fixture(scope="module")
def predictors():
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    ref = reference_model("sam2.1_hiera_tiny")
    image = synthetic_image(720, 1280)
    theirs, ours = SAM2ImagePredictor(ref), ImagePredictor(ours_from_reference(ref, "sam2.1_hiera_tiny"))
    theirs.set_image(image)
    ours.set_image(image)
    return theirs, ours


PROMPTS = {
    "one point": dict(point_coords=np.array([[400, 360]]), point_labels=np.array([1])),
    "two points": dict(point_coords=np.array([[400, 360], [900, 300]]), point_labels=np.array([1, 0])),
    "box": dict(box=np.array([150, 100, 700, 600])),
    "box and point": dict(box=np.array([150, 100, 700, 600]), point_coords=np.array([[400, 360]]),
                          point_labels=np.array([1])),
    "eight boxes": dict(box=np.array([[40 * i, 30 * i, 600 + 50 * i, 400 + 30 * i] for i in range(8)])),
}


@pytest.mark.parametrize("prompt", sorted(PROMPTS))
@pytest.mark.parametrize("multimask", [True, False])
def test_end_to_end_matches_the_reference_on_a_1280x720_image(predictors, prompt, multimask):
    theirs, ours = predictors
    m1, s1, l1 = theirs.predict(**PROMPTS[prompt], multimask_output=multimask)
    m2, s2, l2 = ours.predict(**PROMPTS[prompt], multimask_output=multimask)
    assert m1.shape == m2.shape and s1.shape == s2.shape and l1.shape == l2.shape
    assert m2.shape[-2:] == (720, 1280)
    ious = [iou(a, b) for a, b in zip(m1.reshape(-1, 720, 1280), m2.reshape(-1, 720, 1280))]
    assert min(ious) >= 0.99, ious
    assert np.abs(s1 - s2).max() <= 1e-2


def test_mask_input_from_a_previous_call_refines(predictors):
    theirs, ours = predictors
    kw = PROMPTS["one point"]
    _, s, low = ours.predict(**kw)
    best = low[np.argmax(s)][None]
    m1, s1, _ = theirs.predict(**kw, mask_input=best, multimask_output=False)
    m2, s2, _ = ours.predict(**kw, mask_input=best, multimask_output=False)
    assert iou(m1[0], m2[0]) >= 0.99 and abs(s1[0] - s2[0]) <= 1e-2


# ---- behaviour, on a small random model -----------------------------------------------------


@pytest.fixture(scope="module")
def small():
    return ImagePredictor(build_model("sam2.1_t", weights="random", image_size=256))


def test_predict_shapes_follow_meta(small):
    small.set_image(synthetic_image(120, 200))
    masks, scores, low = small.predict(point_coords=[[50, 60]], point_labels=[1])
    assert masks.shape == (3, 120, 200) and scores.shape == (3,) and low.shape == (3, 64, 64)
    assert set(np.unique(masks)) <= {0.0, 1.0}
    masks, scores, low = small.predict(box=[[10, 10, 90, 90], [20, 30, 150, 110]], multimask_output=False)
    assert masks.shape == (2, 1, 120, 200) and scores.shape == (2, 1)
    logits, _, _ = small.predict(point_coords=[[50, 60]], point_labels=[1], return_logits=True)
    assert logits.dtype == np.float32 and (logits < 0).any() and (logits > 0).any()


def test_features_can_be_exported_and_reused(small):
    image = synthetic_image(100, 150, seed=3)
    small.set_image(image)
    expected = small.predict(point_coords=[[70, 40]], point_labels=[1])
    feats, hw = small.get_features(), small.orig_hw
    small.set_image(synthetic_image(80, 80, seed=4))
    small.set_features(feats, hw)
    got = small.predict(point_coords=[[70, 40]], point_labels=[1])
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(e, g)


def test_batch_of_images_equals_one_at_a_time(small):
    images = [synthetic_image(100, 150, seed=5), synthetic_image(90, 60, seed=6)]
    small.set_image_batch(images)
    pts = [np.array([[30, 40]]), np.array([[20, 20]])]
    lbl = [np.array([1]), np.array([1])]
    batch_masks, batch_scores, _ = small.predict_batch(pts, lbl)
    for image, p, l, bm, bs in zip(images, pts, lbl, batch_masks, batch_scores):
        small.set_image(image)
        m, s, _ = small.predict(point_coords=p, point_labels=l)
        np.testing.assert_allclose(bs, s, atol=1e-5)
        assert iou(bm[np.argmax(s)], m[np.argmax(s)]) > 0.999


def test_clear_errors_for_bad_prompts(small):
    small.reset_predictor()
    with pytest.raises(RuntimeError, match="set_image"):
        small.predict(point_coords=[[1, 1]], point_labels=[1])
    small.set_image(synthetic_image(64, 64))
    with pytest.raises(ValueError, match="point_labels"):
        small.predict(point_coords=[[1, 1], [2, 2]], point_labels=[1])
    with pytest.raises(ValueError, match="box"):
        small.predict(box=[1, 2, 3])
    with pytest.raises(ValueError, match="at least one"):
        small.predict()


def test_bf16_autocast_keeps_masks(small):
    image = synthetic_image(128, 128, seed=7)
    fp32 = ImagePredictor(small.model)
    bf16 = ImagePredictor(small.model, dtype=torch.bfloat16)
    fp32.set_image(image)
    bf16.set_image(image)
    kw = dict(box=[20, 20, 100, 110], multimask_output=False)
    assert iou(fp32.predict(**kw)[0][0], bf16.predict(**kw)[0][0]) >= 0.95
