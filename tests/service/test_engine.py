"""The engine: encoder work from concurrent requests is batched, answers do not change, the queue is bounded."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from model_core import ImagePredictor
from service.app import create_app

from .conftest import client_for, running_engine
from tests.fixtures import b64, make_image, png_bytes

pytestmark = pytest.mark.anyio

CLICK = {"points": [[70, 40]], "labels": [1]}


def decode(rle: dict) -> np.ndarray:
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


async def test_concurrent_requests_share_encoder_batches_and_get_their_own_answers(tiny_model):
    images = [make_image(seed=100 + i) for i in range(8)]
    with running_engine(tiny_model, max_batch=8, max_wait_ms=500) as engine:
        async with client_for(create_app(engine.settings, engine)) as c:
            responses = await asyncio.gather(*[
                c.post("/v1/segment", json={"image": b64(png_bytes(img)), "objects": [CLICK]}) for img in images
            ])
        m = engine.metrics
        batches = m.value("sam2_batch_size_count")
        singles = m.value("sam2_batch_size_bucket", {"le": "1.0"})
        assert m.value("sam2_encoder_runs_total") == 8
        assert batches < 8 and singles < batches  # at least one encoder call held several images
    alone = ImagePredictor(tiny_model)
    for img, r in zip(images, responses):
        assert r.status_code == 200, r.text
        alone.set_image(img)  # the same image encoded on its own
        masks, scores, _ = alone.predict(point_coords=np.array([[70, 40]]), point_labels=np.array([1]))
        order = np.argsort(-scores, kind="stable")
        obj = r.json()["objects"][0]
        for got, want in zip(obj["masks"], masks[order] > 0):
            np.testing.assert_array_equal(decode(got), want)
        np.testing.assert_allclose(obj["scores"], scores[order], rtol=1e-4, atol=1e-5)


async def test_identical_concurrent_uploads_are_encoded_once(tiny_model):
    data = png_bytes(make_image(seed=300))
    with running_engine(tiny_model, max_batch=4, max_wait_ms=500) as engine:
        async with client_for(create_app(engine.settings, engine)) as c:
            rs = await asyncio.gather(*[
                c.post("/v1/segment", json={"image": b64(data), "objects": [CLICK]}) for _ in range(4)
            ])
        assert engine.metrics.value("sam2_encoder_runs_total") == 1
    assert all(r.json() == rs[0].json() for r in rs)


# ---- back-pressure: a worker kept busy by a job that holds it until the test lets go --------------------


@pytest.fixture(scope="module")
def busy_engine(tiny_model):
    with running_engine(tiny_model, max_batch=1, queue_size=1, request_timeout=0.3, retry_after=2) as engine:
        yield engine


async def start_long_job(c, engine, image_png) -> tuple[asyncio.Task, threading.Event]:
    """A segment-everything request whose model work waits, on the worker, until the returned event is set."""
    started, release = threading.Event(), threading.Event()
    everything = engine.work.everything

    def held(*args, **kwargs):
        del engine.work.everything  # once: later jobs run the real method
        started.set()
        release.wait(60)
        return everything(*args, **kwargs)

    engine.work.everything = held
    image_id = (await c.post("/v1/embed", json={"image": b64(image_png)})).json()["image_id"]
    task = asyncio.create_task(c.post("/v1/segment/everything", json={"image_id": image_id, "points_per_side": 4}))
    assert await asyncio.to_thread(started.wait, 60)  # the worker has taken it
    return task, release


async def test_a_request_that_waits_longer_than_request_timeout_gets_503(busy_engine, image_png):
    data = png_bytes(make_image(seed=400))
    async with client_for(create_app(busy_engine.settings, busy_engine)) as c:
        long_job, release = await start_long_job(c, busy_engine, image_png)
        runs = busy_engine.metrics.value("sam2_encoder_runs_total")
        r = await c.post("/v1/segment", json={"image": b64(data), "objects": [CLICK]})
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "2"
        assert r.json()["type"].endswith("queue-timeout")
        assert not long_job.done()
        release.set()
        assert (await long_job).status_code == 200
        ok = await c.post("/v1/segment", json={"image": b64(image_png), "objects": [CLICK]})
        assert ok.status_code == 200  # the engine goes on
    assert busy_engine.metrics.value("sam2_encoder_runs_total") == runs  # the abandoned job never ran


async def test_a_full_queue_answers_503_at_once(busy_engine, image_png):
    async with client_for(create_app(busy_engine.settings, busy_engine)) as c:
        long_job, release = await start_long_job(c, busy_engine, image_png)
        body = {"image": b64(image_png), "objects": [CLICK]}
        waiting = asyncio.create_task(c.post("/v1/segment", json=body))
        while busy_engine._queue.qsize() < 1:  # the waiting request is queued
            await asyncio.sleep(0.01)
        r = await c.post("/v1/segment", json=body)  # the queue (size 1) is taken
        assert r.status_code == 503
        assert r.json()["type"].endswith("overloaded") and "queue is full" in r.json()["detail"]
        assert r.headers["retry-after"] == "2"
        release.set()
        await waiting
        await long_job
