"""The CUDA path holds the fidelity bar: fp32 on the GPU equals the reference on the CPU, fp16/bf16 autocast
and compiled steps keep the fp32 masks (IoU >= 0.99), for all eight configurations, image and video.

Skipped without CUDA; `bench/gpu_check.sh` runs them on a GPU. `bench/gpu_check.sh --smoke` runs them on
the CPU (SAM2_TEST_DEVICE=cpu, tiny model, small size) so that they never rot.
"""

from __future__ import annotations

import copy
import functools
import os

import numpy as np
import pytest
import torch

from model_core import ImagePredictor
from model_core.compiled import CompileConfig, compile_model
from model_core.precision import parse_dtype
from model_core.video_tracker import VideoTracker
from tests.fixtures import synthetic_clip, synthetic_image
from tests.reference import REF_CONFIG_FILES, build_reference, fit_to_image_size, max_rel_diff, ours_from_reference

DEVICE = os.environ.get("SAM2_TEST_DEVICE", "cuda")
MODELS = os.environ.get("SAM2_GPU_TEST_MODELS", ",".join(REF_CONFIG_FILES)).split(",")
SIZE = int(os.environ.get("SAM2_GPU_TEST_SIZE", "1024"))
LOW_PRECISION = ["fp16", "bf16"]

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                       reason="needs CUDA: bench/gpu_check.sh runs these on a GPU (--smoke: on the CPU)"),
]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.fixture(autouse=True, scope="module")
def true_fp32():
    """fp32 means fp32: TF32 matmuls/convolutions would alone move logits by ~1e-3."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(autouse=True)
def no_grad():
    """Inference only, for each test alone (grad mode is global: tests/conftest.py checks that none leaks)."""
    with torch.no_grad():
        yield


@functools.lru_cache(maxsize=None)
def pair(name: str):
    """(reference on the CPU, ours on DEVICE) with the same seeded random weights."""
    ref = build_reference(name, SIZE)
    return ref, ours_from_reference(ref, name, SIZE).to(DEVICE)


PROMPTS = [
    dict(point_coords=np.array([[0.3, 0.4]]), point_labels=np.array([1])),
    dict(point_coords=np.array([[0.6, 0.5], [0.2, 0.2]]), point_labels=np.array([1, 0])),
    dict(box=np.array([0.1, 0.2, 0.7, 0.8])),
]


def _scaled(prompt: dict, w: int, h: int) -> dict:
    scale = np.array([w, h, w, h], dtype=np.float64)
    out = {k: (v * scale[: v.shape[-1]] if k in ("point_coords", "box") else v) for k, v in prompt.items()}
    return {**out, "multimask_output": False}


@pytest.mark.parametrize("name", MODELS)
def test_fp32_on_device_matches_reference_on_cpu(name):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    ref, ours = pair(name)
    image = synthetic_image(SIZE, SIZE)  # square at the model size: no resize, so only the networks differ
    theirs = fit_to_image_size(SAM2ImagePredictor(ref), SIZE)
    theirs.set_image(image)
    mine = ImagePredictor(ours, dtype=torch.float32)
    mine.set_image(image)
    for p in PROMPTS:
        kw = _scaled(p, SIZE, SIZE)
        expected = torch.from_numpy(theirs.predict(**kw)[2])
        got = torch.from_numpy(mine.predict(**kw)[2])
        assert max_rel_diff(expected, got) <= 1e-3, f"{name} {p}"


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("name", MODELS)
def test_autocast_image_masks_match_fp32(name, dtype):
    _, ours = pair(name)
    h, w = 768, 1024
    image = synthetic_image(h, w)
    fp32, low = ImagePredictor(ours, dtype=torch.float32), ImagePredictor(ours, dtype=parse_dtype(dtype))
    fp32.set_image(image)
    low.set_image(image)
    for p in PROMPTS:
        kw = _scaled(p, w, h)
        assert iou(fp32.predict(**kw)[0][0], low.predict(**kw)[0][0]) >= 0.99, f"{name} {dtype} {p}"


def _track(model, dtype, frames) -> list[dict[int, np.ndarray]]:
    tracker = VideoTracker(model, dtype=dtype)
    state = tracker.new_state(*frames[0].shape[:2])
    h, w = frames[0].shape[:2]
    tracker.add_prompt(state, 1, points=[[0.3 * w, 0.5 * h]], labels=[1])
    tracker.add_prompt(state, 2, box=[0.55 * w, 0.15 * h, 0.8 * w, 0.5 * h])
    return [{o.obj_id: o.mask for o in tracker.track(state, f).objects} for f in frames]


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("name", MODELS)
def test_autocast_tracking_masks_match_fp32(name, dtype):
    _, ours = pair(name)
    frames = synthetic_clip(6, 240, 320)
    expected, got = _track(ours, torch.float32, frames), _track(ours, parse_dtype(dtype), frames)
    for i, (e, g) in enumerate(zip(expected, got)):
        for obj in e:
            assert iou(e[obj], g[obj]) >= 0.99, f"{name} {dtype} frame {i} object {obj}"


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_kept_weight_copies_change_no_bit(dtype):
    """Autocast's weight casts made once (modeling/autocast_weights.py) give the logits of casting on every call.
    Compared exactly where the device repeats itself bit for bit, else within its own run-to-run spread."""
    from model_core.modeling.autocast_weights import kept

    _, ours = pair(MODELS[0])
    frames = synthetic_clip(4, 240, 320)

    def logits(keep: bool) -> list[torch.Tensor]:
        with kept(keep):
            tracker = VideoTracker(ours, dtype=parse_dtype(dtype))
            state = tracker.new_state(240, 320)
            tracker.add_prompt(state, 1, points=[[96, 120]], labels=[1])
            tracker.add_prompt(state, 2, box=[176, 36, 256, 120])
            return [torch.cat([o.logits.flatten().cpu(), torch.tensor([o.object_score_logit])])
                    for f in frames for o in tracker.track(state, f).objects]

    cast_each, again, kept_copies = logits(False), logits(False), logits(True)
    spread = max(float((a - b).abs().max()) for a, b in zip(cast_each, again))
    diff = max(float((a - b).abs().max()) for a, b in zip(cast_each, kept_copies))
    assert diff <= spread, f"{dtype}: kept copies moved logits by {diff} (run to run: {spread})"


@pytest.mark.skipif(not DEVICE.startswith("cuda"), reason="compiling takes minutes on a CPU")
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_model_keeps_masks(mode):
    """SAM2_COMPILE's compile_model (encoders, memory attention, decoder; CUDA graphs with reduce-overhead)
    keeps the eager masks, image and video."""
    name = MODELS[0]
    _, ours = pair(name)
    compiled = compile_model(copy.deepcopy(ours), CompileConfig(mode))
    dtype = parse_dtype("fp16")
    image = synthetic_image(768, 1024)
    eager, fast = ImagePredictor(ours, dtype=dtype), ImagePredictor(compiled, dtype=dtype)
    eager.set_image(image)
    fast.set_image(image)
    for p in PROMPTS:
        e, g = eager.predict(**_scaled(p, 1024, 768))[0][0], fast.predict(**_scaled(p, 1024, 768))[0][0]
        assert iou(e, g) >= 0.99, f"{name} {mode} {p}"
    frames = synthetic_clip(10, 240, 320)
    for i, (e, g) in enumerate(zip(_track(ours, dtype, frames), _track(compiled, dtype, frames))):
        for obj in e:
            assert iou(e[obj], g[obj]) >= 0.99, f"{name} {mode} frame {i} object {obj}"
