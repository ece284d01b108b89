"""Mask wire formats, and client RLE parsed safely (pycocotools' own decoder trusts its counts)."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from service.mask_encoding import encode_masks, mask_prompt_logits, rle_to_mask


def random_masks(n=3, h=37, w=29, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, h, w)) > 0.6


def test_rle_is_pycocotools_compressed_rle():
    masks = random_masks()
    for rle, m in zip(encode_masks(masks, "rle"), masks):
        assert isinstance(rle["counts"], str) and rle["size"] == [37, 29]
        np.testing.assert_array_equal(coco_mask.decode({**rle, "counts": rle["counts"].encode()}).astype(bool), m)


@pytest.mark.parametrize("seed", range(5))
def test_rle_to_mask_reads_pycocotools_strings(seed):
    m = random_masks(1, 64, 48, seed)[0]
    rle = coco_mask.encode(np.asfortranarray(m.astype(np.uint8)))
    np.testing.assert_array_equal(rle_to_mask({"size": rle["size"], "counts": rle["counts"].decode()}), m)


def test_rle_to_mask_reads_uncompressed_counts():
    m = np.zeros((4, 3), bool)
    m[1:3, 1] = True  # column-major: col 0 (4 zeros), col 1 (1 zero, 2 ones, 1 zero), col 2 (4 zeros)
    np.testing.assert_array_equal(rle_to_mask({"size": [4, 3], "counts": [5, 2, 5]}), m)


def test_all_foreground_mask_round_trips():
    m = np.ones((8, 9), bool)
    (rle,) = encode_masks(m[None], "rle")
    np.testing.assert_array_equal(rle_to_mask(rle), m)


@pytest.mark.parametrize("counts, message", [
    ([5, 5], "add up to 10"),
    ([13, -1], "negative"),
    ("0", "add up to 0"),
    ("1\x7f", "invalid character"),
    ("o", "ends inside a number"),  # 'o' has the continuation bit set
])
def test_malformed_rle_is_a_value_error(counts, message):
    with pytest.raises(ValueError, match=message):
        rle_to_mask({"size": [3, 4], "counts": counts})


def test_mask_prompt_logits_are_plus_minus_20_at_low_res():
    m = np.zeros((64, 64), bool)
    m[:, 32:] = True
    logits = mask_prompt_logits(m, 16)
    assert logits.shape == (1, 16, 16) and logits.dtype == np.float32
    assert logits[0, 0, 0] == -20 and logits[0, 0, -1] == 20
