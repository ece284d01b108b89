"""GET /v1/models, /healthz, /readyz, /metrics and the OpenAPI document."""

from __future__ import annotations

import pytest

from service.app import create_app
from service.engine import Engine

from .conftest import client_for, make_settings
from tests.fixtures import b64

pytestmark = pytest.mark.anyio

METRICS = [
    "sam2_request_duration_seconds", "sam2_queue_depth", "sam2_queue_wait_seconds", "sam2_batch_size",
    "sam2_device_seconds", "sam2_embedding_cache_hits_total", "sam2_embedding_cache_misses_total",
    "sam2_embedding_cache_bytes", "sam2_model_info", "sam2_errors_total", "sam2_encoder_runs_total",
]


async def test_models_describes_the_loaded_model(client, tiny_model):
    r = await client.get("/v1/models")
    assert r.status_code == 200
    loaded = r.json()["loaded"]
    assert loaded["name"] == "sam2.1_hiera_tiny"
    assert (loaded["image_size"], loaded["dtype"], loaded["device"], loaded["random_weights"]) == (128, "fp32", "cpu", True)
    assert loaded["parameters"] == sum(p.numel() for p in tiny_model.parameters())
    assert loaded["size_mb"] == pytest.approx(loaded["parameters"] * 4 / 2**20, rel=1e-3)
    assert "sam2.1_hiera_large" in r.json()["available"] and len(r.json()["available"]) == 8


async def test_healthz_and_readyz_when_ready(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


async def test_readyz_waits_for_loading_and_warm_up(tiny_model):
    engine = Engine(make_settings(warmup=True), model=tiny_model)
    async with client_for(create_app(engine.settings, engine)) as c:
        assert (await c.get("/readyz")).status_code == 503
        assert (await c.get("/healthz")).status_code == 200
        engine.start()
        assert engine.wait_ready(60)
        assert (await c.get("/readyz")).status_code == 200
    engine.stop()
    assert not engine.ready


async def test_healthz_fails_when_the_model_cannot_load(tmp_path):
    engine = Engine(make_settings(weights=str(tmp_path / "missing.pt"))).start()
    assert not engine.wait_ready(60)
    async with client_for(create_app(engine.settings, engine)) as c:
        r = await c.get("/healthz")
        assert r.status_code == 503 and "failed to load" in r.json()["detail"]
        assert (await c.get("/readyz")).status_code == 503
    engine.stop()


async def test_metrics_exposes_every_metric_of_the_contract(client, image_png):
    await client.post("/v1/segment", json={"image": b64(image_png), "objects": [{"box": [1, 1, 50, 50]}]})
    await client.post("/v1/segment", json={"image_id": "nope", "objects": [{"box": [1, 1, 50, 50]}]})
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in METRICS:
        assert f"# TYPE {name} " in text, name
    assert 'sam2_model_info{device="cpu",dtype="fp32",image_size="128",model="sam2.1_hiera_tiny"} 1.0' in text
    assert 'sam2_device_seconds_count{model="sam2.1_hiera_tiny",stage="decoder"}' in text
    assert 'sam2_errors_total{kind="image-id-unknown"}' in text


async def test_request_latency_is_labelled_by_route_template(client):
    await client.get("/v1/models")
    await client.get("/no/such/path")
    text = (await client.get("/metrics")).text
    assert 'sam2_request_duration_seconds_count{method="GET",route="/v1/models",status="200"}' in text
    assert 'route="unmatched",status="404"' in text


async def test_each_app_has_its_own_registry(tiny_model):
    a, b = Engine(make_settings(), model=tiny_model), Engine(make_settings(), model=tiny_model)
    create_app(a.settings, a), create_app(b.settings, b)  # no "Duplicated timeseries" error
    a.metrics.errors.labels("x").inc()
    assert b.metrics.value("sam2_errors_total", {"kind": "x"}) == 0


async def test_openapi_documents_both_body_types(client):
    doc = (await client.get("/openapi.json")).json()
    content = doc["paths"]["/v1/segment"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    assert "ObjectPrompt" in doc["components"]["schemas"]
    assert (await client.get("/docs")).status_code == 200
