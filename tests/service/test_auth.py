"""API keys: off by default; when SAM2_API_KEYS holds sha256 digests, every /v1 route needs a key."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.app import create_app
from service.auth import hash_key, match_key
from service.settings import Settings

from .conftest import client_for, make_settings
from tests.fixtures import b64

pytestmark = pytest.mark.anyio

KEY_A, KEY_B = "alpha-secret-key", "bravo-secret-key"


@pytest.fixture
async def secured(engine):
    settings = make_settings(api_keys=[hash_key(KEY_A), hash_key(KEY_B)])
    async with client_for(create_app(settings, engine)) as c:
        yield c


async def test_auth_is_off_by_default(client):
    assert (await client.get("/v1/models")).status_code == 200


async def test_missing_key_is_401_with_www_authenticate(secured):
    r = await secured.get("/v1/models")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.headers["content-type"] == "application/problem+json"
    assert "needs an API key" in r.json()["detail"]


async def test_wrong_key_is_401(secured):
    r = await secured.get("/v1/models", headers={"Authorization": "Bearer not-the-key"})
    assert r.status_code == 401
    assert r.json()["detail"].startswith("the API key in Authorization: Bearer")


async def test_bearer_key_is_accepted(secured):
    assert (await secured.get("/v1/models", headers={"Authorization": f"Bearer {KEY_A}"})).status_code == 200


async def test_x_api_key_header_is_accepted(secured):
    assert (await secured.get("/v1/models", headers={"X-API-Key": KEY_B})).status_code == 200


async def test_every_v1_route_needs_the_key(secured, image_png):
    for method, path in [("post", "/v1/segment"), ("post", "/v1/embed"), ("post", "/v1/segment/everything"),
                         ("get", "/v1/models")]:
        r = await secured.request(method.upper(), path, json={"image": b64(image_png), "objects": [{"box": [1, 1, 9, 9]}]})
        assert r.status_code == 401, path


async def test_health_ready_and_metrics_need_no_key(secured):
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await secured.get(path)).status_code == 200, path


async def test_image_ids_are_private_to_a_key(secured, image_png):
    a = await secured.post("/v1/embed", json={"image": b64(image_png), "image_id": "shared-name"},
                           headers={"X-API-Key": KEY_A})
    assert a.status_code == 200
    mine = await secured.post("/v1/segment", json={"image_id": "shared-name", "objects": [{"box": [1, 1, 9, 9]}]},
                              headers={"X-API-Key": KEY_A})
    theirs = await secured.post("/v1/segment", json={"image_id": "shared-name", "objects": [{"box": [1, 1, 9, 9]}]},
                                headers={"X-API-Key": KEY_B})
    assert mine.status_code == 200
    assert theirs.status_code == 404


def test_keys_match_by_sha256_digest():
    digests = [hash_key(KEY_A), hash_key(KEY_B)]
    assert match_key(KEY_B, digests) == hash_key(KEY_B)
    assert match_key("other", digests) is None
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_settings_take_comma_separated_digests_from_the_environment(monkeypatch):
    monkeypatch.setenv("SAM2_API_KEYS", f" {hash_key(KEY_A)} ,{hash_key(KEY_B).upper()}")
    assert Settings().api_keys == [hash_key(KEY_A), hash_key(KEY_B)]


def test_settings_refuse_plain_keys(monkeypatch):
    monkeypatch.setenv("SAM2_API_KEYS", KEY_A)
    with pytest.raises(ValidationError, match="sha256 hex digests"):
        Settings()
