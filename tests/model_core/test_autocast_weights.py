"""Layers keep autocast's reduced-precision weight copies: fewer ops per call, the very same numbers."""

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from model_core import ImagePredictor, VideoTracker, build_model
from model_core.modeling.autocast_weights import kept
from tests.fixtures import synthetic_clip, synthetic_image

SIZE = 128


class WeightCasts(TorchDispatchMode):
    """Counts the dtype conversions whose input is a weight or bias of one of the model's linears or convolutions."""

    def __init__(self, model):
        super().__init__()
        layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
        self.params = {p.data_ptr() for m in layers for p in m.parameters()}
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in ("_to_copy", "to") and args and args[0].data_ptr() in self.params:
            self.n += 1
        return func(*args, **(kwargs or {}))


def track(model, frames, dtype=torch.bfloat16):
    """Two objects tracked over `frames`: their low-res logits and object scores per frame, and the weight casts
    of the last step."""
    tracker = VideoTracker(model, dtype=dtype)
    state = tracker.new_state(SIZE, SIZE)
    tracker.add_prompt(state, obj_id=1, points=[[40, 48]], labels=[1])
    tracker.add_prompt(state, obj_id=2, box=[70, 10, 110, 50])
    def outputs(result):
        return [t for o in result.objects for t in (o.logits, torch.tensor([o.object_score_logit, o.iou]))]

    logits = [outputs(tracker.track(state, f)) for f in frames[:-1]]
    with WeightCasts(model) as casts:
        logits.append(outputs(tracker.track(state, frames[-1])))
    return logits, casts.n


def test_tracking_gives_the_same_logits_without_casting_weights_each_step():
    model = build_model("sam2.1_t", weights="random", image_size=SIZE, seed=1)  # seed 1: both objects present
    frames = synthetic_clip(5, SIZE, SIZE)
    with kept(False):
        cast_each_call, casts_before = track(model, frames)
    kept_copies, casts_after = track(model, frames)
    assert casts_before > 100  # every linear and convolution of the step cast its weight and bias
    assert casts_after == 0
    for a, b in zip(cast_each_call, kept_copies, strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)


def test_a_click_gives_the_same_masks_with_kept_copies():
    model = build_model("sam2.1_t", weights="random", image_size=SIZE)
    predictor = ImagePredictor(model, dtype=torch.bfloat16)
    predictor.set_image(synthetic_image(96, 160))
    prompt = dict(point_coords=[[50, 40], [90, 60]], point_labels=[1, 0], return_logits=True)
    with kept(False):
        expected = predictor.predict(**prompt)
    got = predictor.predict(**prompt)
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a, b)


def test_copies_follow_new_weights_and_another_dtype():
    """Loading other weights in place, or switching bf16 to fp16, must not leave stale copies in use."""
    model = build_model("sam2.1_t", weights="random", image_size=SIZE)
    other = build_model("sam2.1_t", weights="random", image_size=SIZE, seed=1)
    frames = synthetic_clip(3, SIZE, SIZE)
    track(model, frames)  # copies of the first weights are now kept
    model.load_state_dict(other.state_dict())
    with kept(False):
        expected, _ = track(other, frames)
    got, _ = track(model, frames)
    assert all(torch.equal(x, y) for a, b in zip(expected, got) for x, y in zip(a, b))
    with kept(False):
        expected_fp16, _ = track(other, frames, torch.float16)
    got_fp16, _ = track(model, frames, torch.float16)
    assert all(torch.equal(x, y) for a, b in zip(expected_fp16, got_fp16) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for a, b in zip(expected, expected_fp16) for x, y in zip(a, b))


def test_the_dense_positional_encoding_is_kept_and_follows_its_buffer_and_autocast():
    """The image grid's positional encoding (asked for by every decode) is made once per buffer and autocast dtype:
    the same numbers as making it afresh, remade when the buffer is loaded or autocast changes."""
    pe = build_model("sam2.1_t", weights="random", image_size=SIZE).sam_prompt_encoder

    def fresh():
        return pe.pe_layer(pe.image_embedding_size)[None]

    with torch.inference_mode():
        first = pe.get_dense_pe()
        assert pe.get_dense_pe() is first and torch.equal(first, fresh())
        with torch.autocast("cpu", torch.bfloat16):
            low = pe.get_dense_pe()
            assert low is not first and torch.equal(low, fresh()) and not torch.equal(low, first)
        assert torch.equal(pe.get_dense_pe(), first)
    first.add_(1)  # a caller that wrote to it does not poison the next decode
    assert torch.equal(pe.get_dense_pe(), fresh())
    other = torch.randn(2, pe.embed_dim // 2, generator=torch.Generator().manual_seed(1))
    pe.load_state_dict({**pe.state_dict(), "pe_layer.positional_encoding_gaussian_matrix": other})
    assert torch.equal(pe.get_dense_pe(), fresh()) and torch.equal(pe.pe_layer.positional_encoding_gaussian_matrix, other)
    layer = pe.pe_layer
    for seed in (2, 3):  # new buffer objects, both at version 0 (a module moved to another device or dtype)
        layer.positional_encoding_gaussian_matrix = torch.randn(2, pe.embed_dim // 2,
                                                                generator=torch.Generator().manual_seed(seed))
        assert torch.equal(pe.get_dense_pe(), fresh())
    with torch.inference_mode():  # a model moved under inference mode holds inference tensors: made each call
        layer.positional_encoding_gaussian_matrix = other.clone()
        assert layer.positional_encoding_gaussian_matrix.is_inference()
        assert torch.equal(pe.get_dense_pe(), fresh())
