"""GET /v1/models, /healthz, /readyz, /metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest
import torch

from service.app import create_app
from service.engine import Engine
from tests.redis_server import free_port
from tests.serve_process import REPO

from .conftest import client_for, make_settings, running_engine
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


# ---- liveness: a broken device or a stuck worker restarts the pod -------------------------------------

def cuda_fault():
    """What torch raises after a kernel faulted on a GPU (illegal address, device-side assert)."""
    raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")


async def test_a_fatal_device_error_fails_healthz_and_readyz(tiny_model):
    with running_engine(tiny_model) as engine:
        async with client_for(create_app(engine.settings, engine)) as c:
            with pytest.raises(torch.AcceleratorError):
                await engine.call(cuda_fault)
            health = await c.get("/healthz")
            assert health.status_code == 503 and health.json()["type"].endswith("device-failed")
            assert "illegal memory access" in health.json()["detail"]
            assert (await c.get("/readyz")).status_code == 503  # out of the Service until restarted


async def test_an_ordinary_job_failure_or_oom_keeps_the_replica_alive(tiny_model):
    def oom():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with running_engine(tiny_model) as engine:
        async with client_for(create_app(engine.settings, engine)) as c:
            for fail in (oom, lambda: 1 / 0):
                with pytest.raises((torch.cuda.OutOfMemoryError, ZeroDivisionError)):
                    await engine.call(fail)
            assert (await c.get("/healthz")).status_code == 200 and (await c.get("/readyz")).status_code == 200


async def test_healthz_fails_while_the_model_worker_is_stuck(tiny_model):
    with running_engine(tiny_model, worker_stall_seconds=0.5) as engine:
        async with client_for(create_app(engine.settings, engine)) as c:
            assert (await c.get("/healthz")).status_code == 200
            stuck = asyncio.ensure_future(engine.call(lambda: time.sleep(2.5)))  # a hung device, for a while
            await asyncio.sleep(1.5)
            health = await c.get("/healthz")
            assert health.status_code == 503 and health.json()["type"].endswith("worker-stalled")
            await stuck
            await asyncio.sleep(0.3)
            assert (await c.get("/healthz")).status_code == 200  # the worker came back


def test_serve_exits_non_zero_with_a_one_line_reason_when_the_model_cannot_load(tmp_path):
    """No network: the checkpoint's mirror refuses connections. The process exits instead of idling unready."""
    port = free_port()  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAM2_")}
    env.update(SAM2_WEIGHTS_DIR=str(tmp_path), SAM2_WEIGHTS_URL=f"http://127.0.0.1:{port}/sam2.1_hiera_tiny.pt")
    proc = subprocess.run([sys.executable, "-m", "service.cli", "serve", "--model", "sam2.1_t", "--device", "cpu",
                           "--port", str(free_port()), "--log-level", "warning"],
                          env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the model failed to load: CheckpointError: download of http://127.0.0.1:")
    assert "Connection refused" in last


CUDA_FAULT_SCRIPT = """
import asyncio, json, httpx, torch
from service.app import create_app
from service.engine import Engine
from service.settings import Settings

def fault():  # an out-of-bounds index in a CUDA kernel: a device-side assert, the context is unusable after it
    x = torch.zeros(4, device="cuda")
    x[torch.tensor([1 << 20], device="cuda")] = 1.0
    torch.cuda.synchronize()

async def main():
    engine = Engine(Settings(model="sam2.1_t", weights="random", device="cuda", image_size=128)).start()
    assert engine.wait_ready(300), engine.status_detail()
    app = create_app(engine.settings, engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        before = (await c.get("/healthz")).status_code
        try:
            await engine.call(fault)
        except Exception as exc:
            raised = type(exc).__name__
        health = await c.get("/healthz")
        print(json.dumps({"before": before, "raised": raised, "status": health.status_code, "body": health.json(),
                          "ready": (await c.get("/readyz")).status_code}))
    engine.stop()

asyncio.run(main())
"""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_real_cuda_fault_fails_healthz_and_readyz():
    """On a GPU: a real device-side assert (in its own process: it leaves the CUDA context unusable)."""
    import json

    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", CUDA_FAULT_SCRIPT], capture_output=True, text=True, timeout=600,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": path})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["before"] == 200 and result["raised"] == "AcceleratorError", result
    assert result["status"] == 503 and result["body"]["type"].endswith("device-failed"), result
    assert "device-side assert" in result["body"]["detail"] and result["ready"] == 503, result
