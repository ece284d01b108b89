"""Every client mistake is a 4xx RFC 9457 problem saying what was wrong, and is counted by kind."""

from __future__ import annotations

import json
import struct
import zlib

import cv2
import numpy as np
import pytest

from service.app import create_app

from .conftest import client_for, make_settings, multipart, running_engine
from tests.fixtures import b64

pytestmark = pytest.mark.anyio

CLICK = {"points": [[10, 10]], "labels": [1]}


@pytest.fixture(scope="module")
def engine(tiny_model):
    """Small limits, to reach them with small inputs."""
    with running_engine(tiny_model, max_image_bytes=60_000, max_image_pixels=200 * 200, max_objects=3,
                        max_points=4) as eng:
        yield eng


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming width x height, with no pixel data: a decompression-bomb stand-in."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def assert_problem(r, status: int, kind: str, text: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == status
    assert body["type"] == f"urn:sam2-service:problem:{kind}"
    assert body["title"]
    assert text in body["detail"], body["detail"]
    return body


async def segment(client, image_bytes: bytes, objects=(CLICK,), **extra):
    return await client.post("/v1/segment", json={"image": b64(image_bytes), "objects": list(objects), **extra})


async def test_undecodable_image_is_400(client, image_png):
    broken = image_png[:40] + b"\x00" * 200
    assert_problem(await segment(client, broken), 400, "image-undecodable", "cannot be decoded")


async def test_truncated_header_is_400(client):
    assert_problem(await segment(client, b"\x89PNG\r\n\x1a\n"), 400, "image-undecodable", "header")


async def test_unknown_format_is_415(client):
    assert_problem(await segment(client, b"hello, this is not an image"), 415, "unsupported-media-type",
                   "unrecognised image format")


async def test_empty_image_is_400(client):
    r = await client.post("/v1/segment", **multipart(b"", objects=json.dumps([CLICK])))
    assert_problem(r, 400, "image-undecodable", "empty")


async def test_zero_pixel_image_header_is_400(client):
    assert_problem(await segment(client, png_header_only(0, 10)), 400, "image-undecodable", "empty")


async def test_invalid_base64_is_400(client):
    r = await client.post("/v1/segment", json={"image": "not base64!!", "objects": [CLICK]})
    assert_problem(r, 400, "image-undecodable", "base64")


async def test_image_over_the_byte_limit_is_413(client):
    noise = np.random.default_rng(0).integers(0, 256, (190, 190, 3), dtype=np.uint8)
    data = cv2.imencode(".png", noise)[1].tobytes()
    assert len(data) > 60_000
    assert_problem(await segment(client, data), 413, "image-too-large", "over the limit of 60000")


async def test_image_over_the_pixel_limit_is_413_without_decoding(client):
    # 100000 x 100000 pixels announced in a 33-byte file: decoding it would be a 30 GB bomb
    assert_problem(await segment(client, png_header_only(100_000, 100_000)), 413, "image-too-large",
                   "100000x100000")


async def test_jpeg_over_the_pixel_limit_is_413(client):
    data = cv2.imencode(".jpg", np.zeros((210, 220, 3), np.uint8))[1].tobytes()
    assert_problem(await segment(client, data), 413, "image-too-large", "220x210")


async def test_request_body_over_the_limit_is_413(client):
    r = await client.post("/v1/segment", content=b"{" + b" " * 2_000_000 + b"}",
                          headers={"content-type": "application/json"})
    assert_problem(r, 413, "image-too-large", "request body")


async def test_point_outside_the_image_is_422(client, image_png):
    r = await segment(client, image_png, [{"points": [[150, 10]], "labels": [1]}])
    assert_problem(r, 422, "invalid-prompt", "point 0 (150, 10) is outside the 144x96 image")


async def test_box_outside_the_image_is_422(client, image_png):
    assert_problem(await segment(client, image_png, [{"box": [0, 0, 200, 50]}]), 422, "invalid-prompt",
                   "outside the 144x96 image")


async def test_label_count_mismatch_is_422(client, image_png):
    r = await segment(client, image_png, [{"points": [[1, 1], [2, 2]], "labels": [1]}])
    assert_problem(r, 422, "validation", "2 points but 1 labels")


async def test_label_value_is_422(client, image_png):
    r = await segment(client, image_png, [{"points": [[1, 1]], "labels": [2]}])
    assert_problem(r, 422, "validation", "labels must be 1 (foreground) or 0 (background)")


async def test_wrong_box_shape_is_422(client, image_png):
    r = await segment(client, image_png, [{"box": [1, 2, 3]}])
    assert_problem(r, 422, "validation", "box must be 4 numbers")


async def test_inverted_box_is_422(client, image_png):
    assert_problem(await segment(client, image_png, [{"box": [50, 50, 10, 10]}]), 422, "validation", "x0 <= x1")


async def test_point_that_is_not_a_pair_is_422(client, image_png):
    r = await segment(client, image_png, [{"points": [[1, 2, 3]]}])
    assert_problem(r, 422, "validation", "point 0 must be [x, y]")


async def test_object_without_prompts_is_422(client, image_png):
    assert_problem(await segment(client, image_png, [{}]), 422, "validation", "needs points, a box or a mask_input")


async def test_unknown_image_id_is_404(client):
    r = await client.post("/v1/segment", json={"image_id": "never-sent", "objects": [CLICK]})
    assert_problem(r, 404, "image-id-unknown", "'never-sent'")


async def test_too_many_objects_is_422(client, image_png):
    assert_problem(await segment(client, image_png, [CLICK] * 4), 422, "invalid-prompt",
                   "4 objects, over the limit of 3")


async def test_too_many_points_is_422(client, image_png):
    r = await segment(client, image_png, [{"points": [[1, 1]] * 5}])
    assert_problem(r, 422, "invalid-prompt", "object 0 has 5 points, over the limit of 4")


async def test_unsupported_mask_format_is_422(client, image_png):
    r = await segment(client, image_png, mask_format="jpeg")
    body = assert_problem(r, 422, "validation", "mask_format")
    assert "'rle', 'polygon' or 'png'" in body["detail"]


async def test_malformed_mask_input_rle_is_422(client, image_png):
    bad = {"mask_input": {"size": [96, 144], "counts": [5, 7]}}
    assert_problem(await segment(client, image_png, [bad]), 422, "invalid-prompt", "add up to 12 pixels")
    wrong_size = {"mask_input": {"size": [10, 10], "counts": [100]}}
    assert_problem(await segment(client, image_png, [wrong_size]), 422, "invalid-prompt", "not the image's")
    garbage = {"mask_input": {"size": [96, 144], "counts": "\x7f\x7f"}}
    assert_problem(await segment(client, image_png, [garbage]), 422, "invalid-prompt", "not valid RLE")


async def test_image_and_image_id_together_is_422(client, image_png):
    r = await segment(client, image_png, image_id="abc")
    assert_problem(r, 422, "validation", "exactly one of `image`")


async def test_neither_image_nor_image_id_is_422(client):
    r = await client.post("/v1/segment", json={"objects": [CLICK]})
    assert_problem(r, 422, "validation", "exactly one of `image`")


async def test_unknown_field_is_422(client, image_png):
    r = await segment(client, image_png, multimask=True)
    assert_problem(r, 422, "validation", "multimask")


async def test_malformed_json_is_400(client):
    r = await client.post("/v1/segment", content=b"{not json", headers={"content-type": "application/json"})
    assert_problem(r, 400, "bad-request", "not valid JSON")


async def test_objects_field_that_is_not_json_is_400(client, image_png):
    r = await client.post("/v1/segment", **multipart(image_png, objects="[{points"))
    assert_problem(r, 400, "bad-request", "'objects' must hold JSON")


async def test_wrong_content_type_is_415(client):
    r = await client.post("/v1/segment", content=b"x", headers={"content-type": "text/plain"})
    assert_problem(r, 415, "unsupported-media-type", "text/plain")


async def test_unknown_route_is_problem_404(client):
    assert_problem(await client.get("/v1/nothing"), 404, "not-found", "Not Found")


async def test_errors_are_counted_by_kind(client, engine):
    before = engine.metrics.value("sam2_errors_total", {"kind": "image-id-unknown"})
    await client.post("/v1/segment", json={"image_id": "nope", "objects": [CLICK]})
    assert engine.metrics.value("sam2_errors_total", {"kind": "image-id-unknown"}) == before + 1


async def test_not_ready_is_503_with_retry_after(tiny_model):
    from service.engine import Engine

    engine = Engine(make_settings(), model=tiny_model)  # never started
    async with client_for(create_app(engine.settings, engine)) as c:
        r = await c.post("/v1/segment", json={"image_id": "x", "objects": [CLICK]})
        assert_problem(r, 503, "not-ready", "loading")
        assert r.headers["retry-after"] == "1"
        ready = await c.get("/readyz")
        assert_problem(ready, 503, "not-ready", "loading")
