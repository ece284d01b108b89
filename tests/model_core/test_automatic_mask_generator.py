"""AutomaticMaskGenerator: same records as Meta's generator, and its helpers equal Meta's helpers."""

import numpy as np
import pytest
import torch

from model_core import build_model
from model_core.automatic_mask_generator import AutomaticMaskGenerator, crop_boxes, layer_point_grids
from model_core.mask_ops import (
    decode_rle,
    encode_rle,
    masks_to_boxes,
    nms,
    remove_small_regions,
    rle_area,
    stability_score,
    uncompressed_rle,
)
from tests.fixtures import synthetic_image
from tests.reference import fit_to_image_size, ours_from_reference, reference_model

amg_ref = pytest.importorskip("sam2.utils.amg")


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.mark.parametrize("crop_n_layers", [0, 1])
def test_same_masks_as_the_reference_generator(crop_n_layers):
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    size = 256
    ref = reference_model("sam2.1_hiera_tiny", size)
    ours = ours_from_reference(ref, "sam2.1_hiera_tiny", size)
    # a square image at the model's input size: both sides see identical pixels, so the thresholds below
    # (set near the middle of the random model's score range) select the same masks on both sides
    image = synthetic_image(size, size, seed=1)
    params = dict(points_per_side=8, pred_iou_thresh=0.55, stability_score_thresh=0.9, stability_score_offset=0.01,
                  box_nms_thresh=1.0, crop_nms_thresh=1.0, crop_n_layers=crop_n_layers,
                  output_mode="coco_rle")
    theirs = SAM2AutomaticMaskGenerator(ref, **params)
    fit_to_image_size(theirs.predictor, size)
    expected = theirs.generate(image)
    got = AutomaticMaskGenerator(ours, **params).generate(image)

    assert 0 < len(got) == len(expected) < 3 * 64 * (1 + 4 * crop_n_layers)  # some, not all, survive
    exp_masks = [decode_rle(r["segmentation"]) for r in expected]
    for rec in got:
        mask = decode_rle(rec["segmentation"])
        best = max(range(len(exp_masks)), key=lambda i: _iou(mask, exp_masks[i]))
        assert _iou(mask, exp_masks[best]) >= 0.98
        match = expected[best]
        assert abs(rec["predicted_iou"] - match["predicted_iou"]) < 1e-3
        assert rec["crop_box"] == match["crop_box"]
        assert rec["area"] == pytest.approx(match["area"], rel=0.02)


def test_output_modes_and_record_fields():
    model = build_model("sam2.1_t", weights="random", image_size=128)
    image = synthetic_image(96, 128)
    gen = AutomaticMaskGenerator(model, points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0,
                                 box_nms_thresh=1.0)
    records = gen.generate(image)
    assert len(records) == 4 * 4 * 3
    rec = records[0]
    assert set(rec) == {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score",
                        "crop_box"}
    assert rec["segmentation"].shape == (96, 128) and rec["segmentation"].dtype == bool
    assert rec["area"] == int(rec["segmentation"].sum())
    assert rec["crop_box"] == [0, 0, 128, 96]
    gen = AutomaticMaskGenerator(model, points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0,
                                 box_nms_thresh=1.0, output_mode="uncompressed_rle")
    unc = gen.generate(image)[0]["segmentation"]
    assert unc["size"] == [96, 128] and sum(unc["counts"]) == 96 * 128
    gen = AutomaticMaskGenerator(model, points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0,
                                 box_nms_thresh=1.0, output_mode="coco_rle")
    coco = gen.generate(image)[0]["segmentation"]
    assert isinstance(coco["counts"], str)
    np.testing.assert_array_equal(decode_rle(coco), rec["segmentation"])


def test_bad_parameters_are_refused():
    model = build_model("sam2.1_t", weights="random", image_size=128)
    with pytest.raises(ValueError, match="exactly one"):
        AutomaticMaskGenerator(model, points_per_side=None)
    with pytest.raises(ValueError, match="output_mode"):
        AutomaticMaskGenerator(model, output_mode="polygons")


# ---- helpers, each against Meta's helper of the same job ------------------------------------


def test_point_grids_and_crop_boxes_match_meta():
    for n, layers, down in [(32, 0, 1), (16, 2, 2), (7, 1, 1)]:
        for a, b in zip(layer_point_grids(n, layers, down), amg_ref.build_all_layer_point_grids(n, layers, down)):
            np.testing.assert_allclose(a, b)
    for hw, layers in [((768, 1024), 1), ((500, 333), 2)]:
        assert crop_boxes(hw, layers, 512 / 1500) == amg_ref.generate_crop_boxes(hw, layers, 512 / 1500)


def test_boxes_stability_and_rle_match_meta():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 40, 50, generator=g).cumsum(1).cumsum(2) / 10
    logits[2] = -5  # an empty mask
    torch.testing.assert_close(
        stability_score(logits, 0.0, 1.0), amg_ref.calculate_stability_score(logits, 0.0, 1.0), equal_nan=True
    )
    masks = logits > 0
    torch.testing.assert_close(masks_to_boxes(masks), amg_ref.batched_mask_to_box(masks).float())
    edges = torch.zeros(3, 7, 9, dtype=torch.bool)  # single pixels in opposite corners, one full column
    edges[0, 0, 0] = edges[1, 6, 8] = True
    edges[2, :, 4] = True
    torch.testing.assert_close(masks_to_boxes(edges), amg_ref.batched_mask_to_box(edges).float())
    for m in (masks, edges, torch.zeros(0, 7, 9, dtype=torch.bool)):  # NumPy arrays get NumPy's boxes, the same
        boxes = masks_to_boxes(m.numpy())
        assert isinstance(boxes, np.ndarray) and boxes.dtype == np.float32
        np.testing.assert_array_equal(boxes, amg_ref.batched_mask_to_box(m).float().numpy().reshape(-1, 4))
    for mask, theirs in zip(masks, amg_ref.mask_to_rle_pytorch(masks)):
        assert uncompressed_rle(mask.numpy()) == theirs
        assert rle_area(encode_rle(mask.numpy()[None])[0]) == amg_ref.area_from_rle(theirs)
    for mask, rle in zip(masks.numpy(), encode_rle(masks.numpy()), strict=True):  # a batch of non-square masks
        assert rle["size"] == [40, 50]
        np.testing.assert_array_equal(decode_rle(rle), mask)


def test_nms_matches_torchvision_including_degenerate_boxes():
    torchvision = pytest.importorskip("torchvision")
    rng = np.random.default_rng(0)
    for trial in range(50):
        xy = rng.uniform(0, 100, (40, 2))
        boxes = np.round(np.concatenate([xy, xy + rng.uniform(0, 50, (40, 2))], 1)).astype(np.float32)
        scores = rng.uniform(0, 1, 40).astype(np.float32)
        expected = torchvision.ops.nms(torch.tensor(boxes), torch.tensor(scores), 0.5).numpy()
        np.testing.assert_array_equal(nms(boxes, scores, 0.5), expected)


def test_small_region_removal_matches_meta():
    rng = np.random.default_rng(1)
    for _ in range(10):
        mask = rng.uniform(size=(60, 60)) > 0.7
        for mode in ("holes", "islands"):
            ours, changed = remove_small_regions(mask, 5, mode)
            theirs, their_changed = amg_ref.remove_small_regions(mask, 5, mode)
            np.testing.assert_array_equal(ours, theirs)
            assert changed == their_changed
