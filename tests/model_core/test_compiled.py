"""SAM2_COMPILE's compile_model: same masks, and a bounded number of graphs whatever the traffic.

Inductor's code generation takes minutes on 2 CPU cores, so these tests trace with the "eager" backend (but one):
TorchDynamo captures and guards exactly the graphs inductor would compile (what recompiles is decided
there), and runs them eagerly. Compiled numerics on CUDA are checked by test_gpu_fidelity (bench/gpu_check.sh).
"""

import copy
import shutil

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from model_core import ImagePredictor, VideoTracker, build_model
from model_core.compiled import CompileConfig, bucket_for, compile_model, owned_outputs, pad_batch
from model_core.modeling.image_encoder import BackboneOutput
from model_core.modeling.mask_decoder import DecoderOutput
from tests.fixtures import make_image, synthetic_clip

SIZE = 128


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


@pytest.fixture
def models():
    """An eager model and a compiled copy with the same random weights."""
    torch._dynamo.reset()
    counters.clear()
    eager = build_model("sam2.1_t", weights="random", image_size=SIZE)
    compiled = build_model("sam2.1_t", weights="random", image_size=SIZE)
    compiled.load_state_dict(eager.state_dict())
    return eager, compile_model(compiled, CompileConfig("default", buckets=(1, 2, 4), backend="eager"))


def two_object_session(model):
    """A tracker on `model` and a 160x96 session with a clicked object and a boxed one."""
    tracker = VideoTracker(model)
    state = tracker.new_state(96, 160)
    tracker.add_prompt(state, obj_id=1, points=[[40, 48]], labels=[1])
    tracker.add_prompt(state, obj_id=2, box=[90, 10, 130, 50])
    return tracker, state


def test_batches_are_padded_to_buckets():
    assert [bucket_for(n, (1, 2, 4, 8)) for n in (1, 2, 3, 5, 8, 9, 17)] == [1, 2, 4, 8, 8, 16, 24]
    x = torch.ones(3, 2)
    assert pad_batch(x, 4).tolist() == [[1, 1], [1, 1], [1, 1], [0, 0]]
    with pytest.raises(ValueError, match="compile mode"):
        CompileConfig("fast")
    with pytest.raises(ValueError, match="increasing"):
        CompileConfig(buckets=(4, 2))


def test_owned_outputs_copies_every_tensor_a_caller_keeps():
    """What reduce-overhead wraps each graph in: its outputs must survive the graph's next replay."""
    buffer = torch.zeros(2, 3)  # stands in for a CUDA graph's output buffer, reused by every replay

    def replay(value: float):
        buffer.fill_(value)
        out = BackboneOutput([buffer[0], buffer[1]], [buffer])
        return out, (buffer, DecoderOutput(buffer, buffer[:, 0], buffer, buffer[:, :1])), 3

    first = owned_outputs(replay)(1.0)
    owned_outputs(replay)(2.0)
    (backbone, (t, decoder), n) = first
    kept = [*backbone.backbone_fpn, *backbone.vision_pos_enc, t, decoder.masks, decoder.iou_pred,
            decoder.sam_tokens, decoder.object_score_logits]
    assert n == 3 and all(bool((k == 1).all()) for k in kept)
    assert isinstance(backbone, BackboneOutput) and isinstance(decoder, DecoderOutput)


def test_encoder_batches_of_any_size_use_one_graph_per_bucket(models):
    eager, compiled = models
    x = torch.randn(4, 3, SIZE, SIZE)
    with torch.inference_mode():
        for n in (1, 2, 3, 4):
            compiled.image_features(x[:n])
        before = graphs()
        for n in (3, 1, 4, 2, 3):  # every bucket seen: nothing new to build
            got, want = compiled.image_features(x[:n]), eager.image_features(x[:n])
            assert got.image_embed.shape[0] == n
            torch.testing.assert_close(got.image_embed, want.image_embed, atol=1e-4, rtol=1e-4)
    assert graphs() == before


def test_clicks_give_the_eager_masks_and_stop_recompiling(models):
    eager, compiled = models
    image = make_image()
    predictors = [ImagePredictor(m) for m in (eager, compiled)]
    for p in predictors:
        p.set_image(image)
    rng = np.random.default_rng(0)
    for round_ in range(2):
        if round_ == 1:
            before = graphs()
        for k in (1, 2, 3, 5):  # point counts vary: the decoder's graph turns dynamic in that dimension
            coords, labels = rng.uniform(5, 90, (k, 2)), np.ones(k)
            (want, ws, _), (got, gs, _) = (p.predict(point_coords=coords, point_labels=labels) for p in predictors)
            np.testing.assert_array_equal(got, want)
            np.testing.assert_allclose(gs, ws, atol=1e-5)
    assert graphs() == before


def test_tracking_gives_the_eager_masks_and_reaches_a_steady_state(models):
    eager, compiled = models
    clip = synthetic_clip(14, 96, 160)
    runs = []
    for model in (eager, compiled):
        tracker, state = two_object_session(model)
        masks = []
        for i, frame in enumerate(clip):
            if model is compiled and i == 10:
                steady = graphs()  # memory bank full (7 frames) and pointers growing: shapes settled
            masks.append([o.mask for o in tracker.track(state, frame).objects])
        runs.append(masks)
    for want, got in zip(*runs):
        for w, g in zip(want, got):
            np.testing.assert_array_equal(g, w)
    assert graphs() == steady


def test_rope_in_real_arithmetic_gives_the_complex_product():
    """Compiled, RoPE rotates with cosines and sines (inductor generates no code for complex ops)."""
    from model_core.modeling.position_encoding import axial_rope_angles, rotate_pairs

    ang = axial_rope_angles(32, 8, 8)  # (64, 16)
    x = torch.randn(2, 4, 64, 32)
    complex_form = rotate_pairs(x, torch.polar(torch.ones_like(ang), ang))
    real_form = rotate_pairs(x, torch.stack([ang.cos(), ang.sin()], dim=-1))
    assert real_form.shape == x.shape
    torch.testing.assert_close(real_form, complex_form, atol=1e-6, rtol=1e-6)
    assert not torch.equal(real_form, x)  # it does rotate


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="inductor's CPU code needs a C++ compiler")
def test_inductor_generated_code_keeps_the_masks():
    """The one test that generates code (about two minutes on 2 cores): every network compile_model compiles goes
    through inductor's lowering, as on a GPU; clicks and tracking keep the eager masks (IoU >= 0.99)."""
    from tests.model_core.video_fixtures import tracking_model

    torch._dynamo.reset()
    eager = tracking_model(SIZE)  # objects read as present: masks to compare are not empty
    compiled = copy.deepcopy(eager)
    compile_model(compiled, CompileConfig("default", buckets=(1, 2)))

    def iou(a, b):
        a, b = np.asarray(a) > 0, np.asarray(b) > 0
        assert a.any() or b.any()
        return (a & b).sum() / (a | b).sum()

    predictors = [ImagePredictor(m) for m in (eager, compiled)]
    for p in predictors:
        p.set_image(make_image())
    (want, _, _), (got, _, _) = (p.predict(point_coords=[[40, 30], [70, 60]], point_labels=[1, 1]) for p in predictors)
    assert all(iou(w, g) >= 0.99 for w, g in zip(want, got))
    runs = []
    for model in (eager, compiled):
        tracker, state = two_object_session(model)
        runs.append([[o.mask for o in tracker.track(state, f).objects] for f in synthetic_clip(9, 96, 160)])
    assert all(iou(w, g) >= 0.99 for fw, fg in zip(*runs) for w, g in zip(fw, fg))
