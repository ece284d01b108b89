"""POST /v1/embed: the embedding is computed once, cached under an image_id, and reused by later calls."""

from __future__ import annotations

import hashlib

import pytest

from .conftest import multipart
from tests.fixtures import b64, make_image, png_bytes

pytestmark = pytest.mark.anyio


def runs(engine) -> float:
    return engine.metrics.value("sam2_encoder_runs_total")


async def test_embed_returns_the_content_hash_and_runs_the_encoder_once(client, engine):
    data = png_bytes(make_image(seed=21))
    before = runs(engine)
    r = await client.post("/v1/embed", json={"image": b64(data)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["image_id"] == hashlib.sha256(data).hexdigest()
    assert (body["width"], body["height"], body["cached"]) == (144, 96, False)
    assert body["embedding_bytes"] > 0
    assert runs(engine) == before + 1
    again = await client.post("/v1/embed", **multipart(data))
    assert again.json()["cached"] is True
    assert runs(engine) == before + 1


async def test_segment_after_embed_does_not_encode(client, engine):
    data = png_bytes(make_image(seed=22))
    image_id = (await client.post("/v1/embed", json={"image": b64(data)})).json()["image_id"]
    before = runs(engine)
    r = await client.post("/v1/segment", json={"image_id": image_id, "objects": [{"points": [[10, 10]]}]})
    assert r.status_code == 200, r.text
    assert runs(engine) == before


async def test_embed_under_a_chosen_name(client, engine):
    data = png_bytes(make_image(seed=23))
    r = await client.post("/v1/embed", **multipart(data, image_id="holiday-photo_01"))
    assert r.status_code == 200, r.text
    assert r.json()["image_id"] == "holiday-photo_01"
    by_name = await client.post("/v1/segment", json={"image_id": "holiday-photo_01", "objects": [{"box": [5, 5, 50, 50]}]})
    by_pixels = await client.post("/v1/segment", json={"image": b64(data), "objects": [{"box": [5, 5, 50, 50]}]})
    assert by_name.json()["objects"] == by_pixels.json()["objects"]


async def test_embed_without_an_image_is_422(client):
    r = await client.post("/v1/embed", json={"image_id": "abc"})
    assert r.status_code == 422
    assert "needs the image" in r.json()["detail"]
