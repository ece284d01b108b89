"""SAM2_COMPILE: the warm-up builds the graphs that requests need, so none compiles while a client waits.

Traced with TorchDynamo's "eager" backend (inductor's code generation takes minutes on 2 cores; which
shapes make a new graph is decided by TorchDynamo's guards either way).
"""

import numpy as np
import torch
from torch._dynamo.utils import counters

from model_core import VideoTracker, build_model
from model_core.compiled import CompileConfig, compile_model
from service.metrics import Metrics
from service.model_work import ModelWork, ObjectGroup
from tests.fixtures import make_image, synthetic_clip
from tests.service.conftest import IMAGE_SIZE, make_settings


def test_after_the_warm_up_requests_compile_nothing():
    torch._dynamo.reset()
    counters.clear()
    settings = make_settings(max_batch=4)
    model = build_model("sam2.1_t", weights="random", image_size=IMAGE_SIZE)
    work = ModelWork(settings, model, Metrics())
    assert work.batch_buckets == (1, 2, 4)
    compile_model(model, CompileConfig("default", buckets=work.batch_buckets, backend="eager"))
    work.load()
    work.warm_up(full=True)
    warm = counters["stats"]["unique_graphs"]
    assert warm > 0

    image = make_image()
    pixels = work.prepare(image)
    feats = work.encode_pixels([pixels] * 3)  # a batch of three: the 4-bucket
    h, w = image.shape[:2]
    clicks = ObjectGroup([0], np.array([[[30.0, 20.0], [60.0, 50.0], [10.0, 70.0]]]), np.array([[1, 0, 1]]), None, None)
    boxes = ObjectGroup([0, 1, 2], None, None, np.array([[5.0, 5.0, 60.0, 60.0], [20, 30, 90, 80], [0, 0, 40, 40]]),
                        None)
    for group in (clicks, boxes):
        for multimask in (True, False):
            work.decode(feats[0], (h, w), group, multimask)
    tracker = VideoTracker(model)
    state = tracker.new_state(96, 160)
    tracker.add_prompt(state, obj_id=7, points=[[40, 48]], labels=[1])
    for frame in synthetic_clip(12, 96, 160):
        tracker.track(state, frame)
    assert counters["stats"]["unique_graphs"] == warm
