"""POST /v1/segment: masks equal Meta-style ImagePredictor's on the same image and prompts, in every format."""

from __future__ import annotations

import base64
import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from .conftest import multipart
from tests.fixtures import b64

pytestmark = pytest.mark.anyio

CLICK = {"points": [[40, 50]], "labels": [1]}


def decode_rle(rle: dict) -> np.ndarray:
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


def by_score(masks: np.ndarray, scores: np.ndarray):
    order = np.argsort(-scores, kind="stable")
    return masks[order], scores[order]


async def test_multipart_click_returns_predictor_masks_as_coco_rle(client, predictor, image_png):
    r = await client.post("/v1/segment", **multipart(image_png, objects=json.dumps([CLICK])))
    assert r.status_code == 200, r.text
    body = r.json()
    (obj,) = body["objects"]
    masks, scores, _ = predictor.predict(point_coords=np.array([[40, 50]]), point_labels=np.array([1]))
    masks, scores = by_score(masks > 0, scores)
    assert len(obj["masks"]) == 3
    for got, want in zip(obj["masks"], masks):
        assert got["size"] == [96, 144]
        np.testing.assert_array_equal(decode_rle(got), want)
    np.testing.assert_allclose(obj["scores"], scores, rtol=1e-5, atol=1e-6)
    assert obj["scores"] == sorted(obj["scores"], reverse=True)
    assert (body["width"], body["height"]) == (144, 96)


async def test_json_base64_equals_multipart(client, image_png):
    form = await client.post("/v1/segment", **multipart(image_png, objects=json.dumps([CLICK])))
    js = await client.post("/v1/segment", json={"image": b64(image_png), "objects": [CLICK]})
    assert js.status_code == 200, js.text
    assert js.json() == form.json()


async def test_data_url_base64_is_accepted(client, image_png):
    r = await client.post("/v1/segment", json={"image": "data:image/png;base64," + b64(image_png), "objects": [CLICK]})
    assert r.status_code == 200, r.text


async def test_many_objects_each_match_the_predictor_alone(client, predictor, image_png):
    objects = [
        {"box": [10, 10, 70, 60]},
        {"box": [60, 30, 140, 90]},
        {"points": [[100, 20], [30, 80]], "labels": [1, 0]},
        {"points": [[20, 20]], "labels": [1], "box": [5, 5, 60, 50]},
    ]
    r = await client.post("/v1/segment", json={"image": b64(image_png), "objects": objects, "multimask_output": False})
    assert r.status_code == 200, r.text
    got = r.json()["objects"]
    assert len(got) == len(objects)
    for obj, prompt in zip(got, objects):
        pts = np.array(prompt["points"]) if "points" in prompt else None
        labels = np.array(prompt["labels"]) if "labels" in prompt else None
        box = np.array(prompt["box"]) if "box" in prompt else None
        masks, scores, _ = predictor.predict(point_coords=pts, point_labels=labels, box=box, multimask_output=False)
        assert len(obj["masks"]) == 1
        np.testing.assert_array_equal(decode_rle(obj["masks"][0]), masks[0] > 0)
        np.testing.assert_allclose(obj["scores"], scores, rtol=1e-5, atol=1e-6)


async def test_labels_default_to_foreground(client, image_png):
    explicit = await client.post("/v1/segment", json={"image": b64(image_png), "objects": [CLICK]})
    implicit = await client.post("/v1/segment", json={"image": b64(image_png), "objects": [{"points": [[40, 50]]}]})
    assert implicit.json()["objects"] == explicit.json()["objects"]


async def test_boxes_are_the_tight_bounds_of_each_mask(client, image_png):
    r = await client.post("/v1/segment", json={"image": b64(image_png), "objects": [CLICK]})
    obj = r.json()["objects"][0]
    for rle, box in zip(obj["masks"], obj["boxes"]):
        mask = decode_rle(rle)
        ys, xs = np.nonzero(mask)
        want = [xs.min(), ys.min(), xs.max(), ys.max()] if len(xs) else [0, 0, 0, 0]
        assert box == [float(v) for v in want]


async def test_png_format_decodes_to_the_predictor_mask(client, predictor, image_png):
    r = await client.post("/v1/segment", json={"image": b64(image_png), "objects": [{"box": [10, 10, 70, 60]}],
                                               "multimask_output": False, "mask_format": "png"})
    assert r.status_code == 200, r.text
    (mask,) = r.json()["objects"][0]["masks"]
    png = cv2.imdecode(np.frombuffer(base64.b64decode(mask["png"]), np.uint8), cv2.IMREAD_UNCHANGED)
    want, _, _ = predictor.predict(box=np.array([10, 10, 70, 60]), multimask_output=False)
    assert png.dtype == np.uint8 and png.ndim == 2
    np.testing.assert_array_equal(png == 255, want[0] > 0)
    assert set(np.unique(png)) <= {0, 255}


async def test_polygon_format_outlines_the_predictor_mask(client, predictor, image_png):
    r = await client.post("/v1/segment", json={"image": b64(image_png), "objects": [{"box": [60, 30, 140, 90]}],
                                               "multimask_output": False, "mask_format": "polygon"})
    assert r.status_code == 200, r.text
    (mask,) = r.json()["objects"][0]["masks"]
    assert mask["size"] == [96, 144] and mask["polygons"]
    filled = np.zeros((96, 144), np.uint8)
    for poly in mask["polygons"]:
        assert len(poly) % 2 == 0
        cv2.fillPoly(filled, [np.array(poly, np.int32).reshape(-1, 2)], 1)
    want, _, _ = predictor.predict(box=np.array([60, 30, 140, 90]), multimask_output=False)
    want = want[0] > 0
    # polygons keep outer contours only: compare with the mask whose holes are filled (flood fill from outside)
    outside = np.pad(~want, 1, constant_values=True).astype(np.uint8)
    cv2.floodFill(outside, None, (0, 0), 2)
    holes_filled = outside[1:-1, 1:-1] != 2
    np.testing.assert_array_equal(filled.astype(bool), holes_filled)


async def test_mask_input_refines_like_the_predictor(client, predictor, image_png):
    first, _, _ = predictor.predict(box=np.array([10, 10, 70, 60]), multimask_output=False)
    prev = first[0] > 0
    rle = coco_mask.encode(np.asfortranarray(prev.astype(np.uint8)))
    prompt = {"points": [[40, 30]], "labels": [1],
              "mask_input": {"size": rle["size"], "counts": rle["counts"].decode("ascii")}}
    r = await client.post("/v1/segment", json={"image": b64(image_png), "objects": [prompt],
                                               "multimask_output": False})
    assert r.status_code == 200, r.text
    # the documented conversion: the binary mask, area-resized to the low-res prompt size, as +-20 logits
    frac = cv2.resize(prev.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA)
    logits = ((frac * 2 - 1) * 20.0)[None]
    want, scores, _ = predictor.predict(point_coords=np.array([[40, 30]]), point_labels=np.array([1]),
                                        mask_input=logits, multimask_output=False)
    np.testing.assert_array_equal(decode_rle(r.json()["objects"][0]["masks"][0]), want[0] > 0)
    np.testing.assert_allclose(r.json()["objects"][0]["scores"], scores, rtol=1e-5, atol=1e-6)


async def test_uncompressed_rle_mask_input_is_accepted(client, image_png):
    mask = np.zeros((96, 144), bool)
    mask[20:60, 30:90] = True
    flat = mask.ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    compressed = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    a = await client.post("/v1/segment", json={"image": b64(image_png), "multimask_output": False,
                                               "objects": [{"mask_input": {"size": [96, 144], "counts": counts}}]})
    b = await client.post("/v1/segment", json={"image": b64(image_png), "multimask_output": False, "objects": [
        {"mask_input": {"size": [96, 144], "counts": compressed["counts"].decode("ascii")}}]})
    assert a.status_code == 200, a.text
    assert a.json() == b.json()


async def test_image_id_reuse_skips_the_encoder(client, engine, image_png):
    runs = lambda: engine.metrics.value("sam2_encoder_runs_total")  # noqa: E731
    first = await client.post("/v1/segment", json={"image": b64(image_png), "objects": [CLICK]})
    image_id = first.json()["image_id"]
    before = runs()
    again = await client.post("/v1/segment", json={"image_id": image_id, "objects": [CLICK]})
    assert again.status_code == 200, again.text
    assert runs() == before
    assert again.json() == first.json()


async def test_image_id_is_the_sha256_of_the_bytes(client, image_png):
    import hashlib

    r = await client.post("/v1/segment", json={"image": b64(image_png), "objects": [CLICK]})
    assert r.json()["image_id"] == hashlib.sha256(image_png).hexdigest()


async def test_uploading_the_same_image_again_hits_the_cache(client, engine):
    from tests.fixtures import make_image, png_bytes

    data = png_bytes(make_image(seed=11))
    runs = lambda: engine.metrics.value("sam2_encoder_runs_total")  # noqa: E731
    hits = lambda: engine.metrics.value("sam2_embedding_cache_hits_total")  # noqa: E731
    runs_0 = runs()
    await client.post("/v1/segment", json={"image": b64(data), "objects": [CLICK]})
    assert runs() == runs_0 + 1
    hits_1 = hits()
    await client.post("/v1/segment", **multipart(data, objects=json.dumps([CLICK])))
    assert runs() == runs_0 + 1
    assert hits() == hits_1 + 1


async def test_the_documented_examples_work(client):
    from service.schemas import EmbedRequest, EverythingRequest, SegmentRequest

    for path, model in [("/v1/segment", SegmentRequest), ("/v1/embed", EmbedRequest),
                        ("/v1/segment/everything", EverythingRequest)]:
        (example,) = model.model_json_schema()["examples"]
        r = await client.post(path, json=example)
        assert r.status_code == 200, (path, r.text)
