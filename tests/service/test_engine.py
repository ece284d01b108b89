"""The engine: encoder work from concurrent requests is batched, answers do not change, the queue is bounded."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask

from model_core import ImagePredictor
from service.app import create_app
from service.auth import NO_AUTH_TENANT
from service.engine import ImageInput

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


# ---- deadlines and back-pressure: a worker held by a slow step ------------------------------------------


@pytest.fixture(scope="module")
def busy_engine(tiny_model):
    with running_engine(tiny_model, max_batch=1, queue_size=2, request_timeout=0.3, retry_after=2) as engine:
        yield engine


def hold_worker(engine, seconds: float) -> asyncio.Task:
    """A step that keeps the worker busy (a stand-in for a long model call)."""
    return asyncio.create_task(engine.call(lambda: time.sleep(seconds)))


async def test_a_request_past_its_deadline_gets_503_and_never_runs(busy_engine):
    data = png_bytes(make_image(seed=400))
    async with client_for(create_app(busy_engine.settings, busy_engine)) as c:
        runs = busy_engine.metrics.value("sam2_encoder_runs_total")
        held = hold_worker(busy_engine, 0.8)
        await asyncio.sleep(0.1)
        r = await c.post("/v1/segment", json={"image": b64(data), "objects": [CLICK]})
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "2"
        assert r.json()["type"].endswith("queue-timeout")
        await held
        assert busy_engine.metrics.value("sam2_encoder_runs_total") == runs  # dropped before its encode
        assert await busy_engine.call(lambda: "still here") == "still here"  # the engine goes on


async def test_a_full_queue_answers_503_at_once(tiny_model, image_png):
    with running_engine(tiny_model, max_batch=1, queue_size=2, retry_after=2) as engine:
        await _full_queue(engine, image_png)


async def _full_queue(busy_engine, image_png):
    async with client_for(create_app(busy_engine.settings, busy_engine)) as c:
        held = hold_worker(busy_engine, 1.0)
        body = {"image": b64(image_png), "objects": [CLICK]}
        waiting = asyncio.create_task(c.post("/v1/segment", json=body))
        while busy_engine.scheduler.active < 2:
            await asyncio.sleep(0.01)
        r = await c.post("/v1/segment", json=body)  # two jobs (size 2) are in: the held one and the waiting one
        assert r.status_code == 503
        assert r.json()["type"].endswith("overloaded") and "queue is full" in r.json()["detail"]
        assert r.headers["retry-after"] == "2"
        await held
        assert (await waiting).status_code == 200


# ---- steps: interactive work goes first, background work still finishes ---------------------------------


async def test_clicks_are_answered_while_segment_everything_runs_and_it_still_finishes(tiny_model, image_png):
    with running_engine(tiny_model) as engine:
        async with client_for(create_app(engine.settings, engine)) as c:
            image_id = (await c.post("/v1/embed", json={"image": b64(image_png)})).json()["image_id"]
            everything = asyncio.create_task(
                c.post("/v1/segment/everything", json={"image_id": image_id, "points_per_side": 32}))
            while engine.metrics.value("sam2_step_batch_count", {"kind": "everything"}) < 1:
                await asyncio.sleep(0.01)  # it has started
            for i in range(5):
                r = await c.post("/v1/segment", json={"image_id": image_id,
                                                      "objects": [{"points": [[20 + 10 * i, 40]], "labels": [1]}]})
                assert r.status_code == 200
                assert not everything.done(), f"click {i} waited for the whole segment-everything job"
            r = await everything
            assert r.status_code == 200 and isinstance(r.json()["annotations"], list)
            steps = engine.metrics.value("sam2_step_batch_count", {"kind": "everything"})
            assert steps >= 16  # 32² points in batches of 64 (plus the final step)


async def test_a_client_that_leaves_cancels_its_remaining_steps(tiny_model, image_png):
    with running_engine(tiny_model) as engine:
        async with client_for(create_app(engine.settings, engine)) as c:
            image_id = (await c.post("/v1/embed", json={"image": b64(image_png)})).json()["image_id"]
        entry = engine.lookup(NO_AUTH_TENANT, image_id)
        image = ImageInput(image_id, entry.orig_hw, cached=entry)
        task = asyncio.create_task(engine.everything(image, None, {"points_per_side": 32}))
        while engine.metrics.value("sam2_step_batch_count", {"kind": "everything"}) < 2:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        steps = engine.metrics.value("sam2_step_batch_count", {"kind": "everything"})
        await asyncio.sleep(0.3)
        assert engine.metrics.value("sam2_cancelled_steps_total") == 1
        assert engine.metrics.value("sam2_step_batch_count", {"kind": "everything"}) <= steps + 1


async def test_an_encode_batch_with_a_broken_image_fails_only_that_request(tiny_model):
    """A step that raises inside a shared batch: the batch is re-run a job at a time; the others are answered."""
    from service.model_work import ImageInput as Input

    good = [make_image(seed=500 + i) for i in range(3)]
    with running_engine(tiny_model, max_batch=4, max_wait_ms=500) as engine:
        inputs = [Input(f"img{i}", img.shape[:2], pixels=engine.prepare(img)) for i, img in enumerate(good)]
        broken = Input("broken", (10, 10), pixels=torch.zeros(3, 7, 7))  # not the encoder's input size
        results = await asyncio.gather(*[engine.embed(x, NO_AUTH_TENANT) for x in [inputs[0], broken, *inputs[1:]]],
                                       return_exceptions=True)
        assert isinstance(results[1], RuntimeError)
        alone = ImagePredictor(tiny_model)
        for img, entry in zip(good, [results[0], *results[2:]]):
            alone.set_image(img)
            assert (entry.features.image_embed - alone.get_image_embedding()).abs().max().item() < 1e-4
        # the batch of four failed as a whole and was re-run a job at a time: three good steps were recorded
        assert engine.metrics.value("sam2_step_batch_count", {"kind": "encode"}) == 3


def test_a_tracking_frame_that_cannot_be_prepared_fails_alone(tiny_model):
    """On the CPU sessions hand the worker images: one that cannot be prepared fails its own session only, before
    its `before` changes anything; the others in the step get the tracker's own masks."""
    from model_core import VideoTracker
    from service.engine import _run_track
    from tests.fixtures import synthetic_clip

    tracker = VideoTracker(tiny_model)
    frame = synthetic_clip(1, 96, 160)[0]
    states = [tracker.new_state(96, 160) for _ in range(3)]
    for st in states:
        tracker.add_prompt(st, obj_id=1, points=[[40, 48]], labels=[1])
    called = []
    payloads = [(tracker, states[0], frame, lambda: called.append(0)),
                (tracker, states[1], np.zeros((0, 160, 3), np.uint8), lambda: called.append(1)),
                (tracker, states[2], frame, None)]
    good, bad, third = _run_track(payloads)
    assert isinstance(bad, Exception) and called == [0] and states[1].frame_idx == 0
    alone = VideoTracker(tiny_model)
    st = alone.new_state(96, 160)
    alone.add_prompt(st, obj_id=1, points=[[40, 48]], labels=[1])
    expected = alone.track(st, frame).objects[0].mask
    for result in (good, third):
        np.testing.assert_array_equal(result.objects[0].mask, expected)
