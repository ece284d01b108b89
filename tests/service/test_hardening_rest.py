"""Issue 12, REST side: what a hostile or careless client found, each kept fixed by a test."""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import subprocess
import sys
import zlib

import httpx
import numpy as np
import pytest

from service import image_io
from service.app import create_app
from service.auth import hash_key

from .conftest import b64, client_for, make_image, png_bytes, running_engine
from .test_errors import assert_problem

pytestmark = pytest.mark.anyio

CLICK = {"points": [[10, 10]], "labels": [1]}


@pytest.fixture(scope="module")
def engine(tiny_model):
    with running_engine(tiny_model, max_image_pixels=400 * 400, max_objects=4, max_points=4) as eng:
        yield eng


# ---- 1. embedding cache poisoning ------------------------------------------------------------------------


async def test_embed_refuses_an_image_id_in_the_content_hash_form(client):
    planted, victim = png_bytes(make_image(48, 64, seed=1)), png_bytes(make_image(30, 40, seed=2))
    r = await client.post("/v1/embed", json={"image": b64(planted), "image_id": hashlib.sha256(victim).hexdigest()})
    assert_problem(r, 422, "validation", "image_id")
    r = await client.post("/v1/embed", json={"image": b64(victim)})
    assert r.status_code == 200, r.text
    assert (r.json()["width"], r.json()["height"]) == (40, 30)


# ---- 2. TIFF bomb past the header check ---------------------------------------------------------------


def tiff_with_two_sizes(big: int, small: int) -> bytes:
    """A deflate-compressed grey TIFF of big x big whose IFD lists ImageWidth/ImageLength again as small."""
    data = zlib.compress(bytes(big * big), 9)
    entries = [(256, 4, 1, big), (257, 4, 1, big), (258, 3, 1, 8), (259, 3, 1, 8), (262, 3, 1, 1),
               (273, 4, 1, 0), (277, 3, 1, 1), (278, 4, 1, big), (279, 4, 1, len(data)),
               (256, 4, 1, small), (257, 4, 1, small)]
    ifd_size = 2 + 12 * len(entries) + 4
    offset = 8 + ifd_size
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        value = offset if tag == 273 else value
        ifd += struct.pack("<HHII", tag, typ, count, value) if typ == 4 else struct.pack("<HHIHH", tag, typ, count,
                                                                                         value, 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + data


def test_tiff_with_duplicate_size_tags_is_refused_without_decoding(monkeypatch):
    bomb = tiff_with_two_sizes(2000, 16)
    monkeypatch.setattr(image_io.cv2, "imdecode", lambda *a: pytest.fail("decoded a TIFF bomb"))
    with pytest.raises(image_io.errors.Problem) as exc:
        image_io.decode_image(bomb, 1 << 20, 1000 * 1000)
    assert exc.value.status in (400, 413)


def test_the_decoder_itself_refuses_images_over_the_pixel_limit():
    """Whatever the header check missed, OpenCV's own decode-time limit is the configured one."""
    code = ("import service.image_io, cv2, numpy as np; from service.settings import Settings;"
            "buf = cv2.imencode('.png', np.zeros((200, 200, 3), np.uint8))[1];"
            "print(Settings().max_image_pixels);"
            "print('refused' if service.image_io.decode_unchecked(buf.tobytes()) is None else 'decoded')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"SAM2_MAX_IMAGE_PIXELS": "10000", "PYTHONPATH": sys.path[0] or "."})
    assert out.stdout.split() == ["10000", "refused"], out.stderr[-2000:]


# ---- 3. limits before parsing, 12. deep nesting ------------------------------------------------------


async def test_a_body_of_many_objects_is_refused_before_validation(client, monkeypatch, image_png):
    import service.inputs

    monkeypatch.setattr(service.inputs, "_validate", lambda *a: pytest.fail("built pydantic models"))
    body = json.dumps({"image": b64(image_png), "objects": [CLICK] * 20_000})
    r = await client.post("/v1/segment", content=body, headers={"content-type": "application/json"})
    assert_problem(r, 413, "too-complex", "JSON")


async def test_deeply_nested_json_is_400(client):
    body = '{"objects": ' + "[" * 5_000 + "]" * 5_000 + "}"  # under the container limit, over the parser's depth
    r = await client.post("/v1/segment", content=body, headers={"content-type": "application/json"})
    assert_problem(r, 400, "bad-request", "nested")


# ---- 12. REST 500s -------------------------------------------------------------------------------------


async def test_mask_input_counts_past_int64_are_422(client, image, image_png):
    h, w = image.shape[:2]
    obj = {"mask_input": {"size": [h, w], "counts": [2**63, 5]}}
    r = await client.post("/v1/segment", json={"image": b64(image_png), "objects": [obj]})
    assert r.status_code == 422, r.text


@pytest.mark.parametrize("hw", [(1, 1), (2, 300)])
async def test_crops_of_a_tiny_image_are_not_a_500(client, hw):
    tiny = png_bytes(np.full((*hw, 3), 128, np.uint8))
    r = await client.post("/v1/segment/everything",
                          json={"image": b64(tiny), "crop_n_layers": 1, "points_per_side": 2})
    assert r.status_code in (200, 422), r.text


async def test_a_crash_is_answered_and_does_not_escape_the_app(engine):
    app = create_app(engine.settings, engine)

    async def boom():
        raise RuntimeError("planted")

    app.add_api_route("/v1/boom", boom)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get("/v1/boom")  # raise_app_exceptions: an exception that left the app would raise here
    assert_problem(r, 500, "internal", "server")


# ---- 15. smaller ---------------------------------------------------------------------------------------


async def test_base64_with_line_breaks_is_accepted(client, image_png):
    text = b64(image_png)
    wrapped = "\n".join(text[i:i + 76] for i in range(0, len(text), 76)) + "\n"
    r = await client.post("/v1/segment", json={"image": wrapped, "objects": [CLICK]})
    assert r.status_code == 200, r.text


async def test_objects_as_a_file_part_is_accepted(client, image_png):
    files = {"image": ("i.png", image_png, "image/png"), "objects": ("o.json", json.dumps([CLICK]), "application/json")}
    r = await client.post("/v1/segment", files=files)
    assert r.status_code == 200, r.text


async def test_a_garbage_multipart_body_is_400(client):
    r = await client.post("/v1/segment", content=b"\x00garbage" * 50,
                          headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert_problem(r, 400, "bad-request", "multipart")


async def test_bearer_wins_over_x_api_key(engine):
    app = create_app(engine.settings.model_copy(update={"api_keys": [hash_key("good")]}), engine)
    async with client_for(app) as c:
        r = await c.get("/v1/models", headers={"Authorization": "Bearer bad", "X-API-Key": "good"})
        assert_problem(r, 401, "unauthorized", "Authorization")
        r = await c.get("/v1/models", headers={"Authorization": "Bearer good", "X-API-Key": "bad"})
        assert r.status_code == 200


async def test_client_errors_log_no_error_traceback(client, caplog, image_png):
    with caplog.at_level(logging.INFO):
        await client.post("/v1/segment", json={"image": "%%%", "objects": [CLICK]})
        await client.post("/v1/segment", json={"image": b64(image_png), "objects": [{"box": [1e9, 0, 1e9, 1]}]})
        await client.post("/v1/segment", content=b"{", headers={"content-type": "application/json"})
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
