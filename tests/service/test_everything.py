"""POST /v1/segment/everything: the AutomaticMaskGenerator's records, over HTTP."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from model_core.automatic_mask_generator import AutomaticMaskGenerator

from .conftest import multipart
from tests.fixtures import b64

pytestmark = pytest.mark.anyio

PARAMS = {"points_per_side": 6, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 0.95}
FIELDS = ("area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box")


def reference(model, image, **params):
    return AutomaticMaskGenerator(model, output_mode="coco_rle", **{**PARAMS, **params}).generate(image)


def assert_same_records(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want) > 0
    for g, w in zip(got, want):
        assert g["segmentation"] == w["segmentation"]
        for key in FIELDS:
            np.testing.assert_allclose(np.array(g[key], float), np.array(w[key], float), rtol=1e-5, atol=1e-5)


async def test_everything_returns_the_generator_records_as_rle(client, tiny_model, image, image_png):
    r = await client.post("/v1/segment/everything", json={"image": b64(image_png), **PARAMS})
    assert r.status_code == 200, r.text
    assert_same_records(r.json()["annotations"], reference(tiny_model, image))
    rle = r.json()["annotations"][0]["segmentation"]
    decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    assert decoded.shape == (96, 144) and decoded.sum() == r.json()["annotations"][0]["area"]


async def test_everything_on_a_cached_image_id_skips_the_encoder(client, engine, tiny_model, image, image_png):
    image_id = (await client.post("/v1/embed", json={"image": b64(image_png)})).json()["image_id"]
    before = engine.metrics.value("sam2_encoder_runs_total")
    r = await client.post("/v1/segment/everything", json={"image_id": image_id, **PARAMS})
    assert r.status_code == 200, r.text
    assert engine.metrics.value("sam2_encoder_runs_total") == before
    assert_same_records(r.json()["annotations"], reference(tiny_model, image))


async def test_everything_with_crops_multipart(client, tiny_model, image, image_png):
    fields = {k: str(v) for k, v in {**PARAMS, "crop_n_layers": 1, "points_per_side": 4}.items()}
    r = await client.post("/v1/segment/everything", **multipart(image_png, **fields))
    assert r.status_code == 200, r.text
    assert_same_records(r.json()["annotations"], reference(tiny_model, image, crop_n_layers=1, points_per_side=4))


async def test_everything_png_masks(client, image_png):
    rle = await client.post("/v1/segment/everything", json={"image": b64(image_png), **PARAMS})
    png = await client.post("/v1/segment/everything", json={"image": b64(image_png), **PARAMS, "mask_format": "png"})
    for a, b in zip(rle.json()["annotations"], png.json()["annotations"]):
        seg = a["segmentation"]
        want = coco_mask.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)
        got = cv2.imdecode(np.frombuffer(base64.b64decode(b["segmentation"]["png"]), np.uint8), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(got == 255, want)


async def test_everything_limits(client, image_png):
    big = await client.post("/v1/segment/everything", json={"image": b64(image_png), "points_per_side": 65})
    assert big.status_code == 422 and "points_per_side 65" in big.json()["detail"]
    crops = await client.post("/v1/segment/everything", json={"image_id": "x", "crop_n_layers": 1})
    assert crops.status_code == 422 and "send the image" in crops.json()["detail"]
