"""modeling.Linear: nn.Linear's numbers and checkpoint keys, with the bias fused into the GEMM in CPU inference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model_core.modeling import linear
from model_core.modeling.linear import Linear

pytestmark = pytest.mark.skipif(linear._FUSED is None, reason="this torch build has no oneDNN linear")


def pair(k: int = 96, n: int = 288) -> tuple[nn.Linear, Linear]:
    torch.manual_seed(0)
    plain = nn.Linear(k, n)
    fused = Linear(k, n)
    fused.load_state_dict(plain.state_dict())  # the same keys: checkpoints load unchanged
    return plain, fused


@pytest.mark.parametrize("shape", [(1, 64, 64, 96), (8, 1024, 96), (7, 96), (0, 96)], ids=["map", "seq", "few", "none"])
def test_inference_takes_the_fused_call_and_gives_the_same_numbers(shape, monkeypatch):
    plain, fused = pair()
    calls = []
    monkeypatch.setattr(linear, "_FUSED", lambda *a: calls.append(1) or torch.ops.mkldnn._linear_pointwise(*a))
    x = torch.randn(shape)
    with torch.inference_mode():
        assert torch.equal(fused(x), plain(x))
    assert calls == [1]


def test_strided_inputs_give_the_same_numbers():
    plain, fused = pair()
    x = torch.randn(1, 96, 32, 32).permute(0, 2, 3, 1)  # channels-last view, as Hiera's maps are
    with torch.no_grad():
        assert torch.equal(fused(x), plain(x))


def test_training_autocast_and_other_dtypes_take_nn_linear(monkeypatch):
    plain, fused = pair()
    monkeypatch.setattr(linear, "_FUSED", lambda *a: pytest.fail("fused call where nn.Linear was due"))
    x = torch.randn(4, 96, requires_grad=True)
    fused(x).sum().backward()  # autograd: gradients flow as through nn.Linear
    assert x.grad is not None and fused.weight.grad is not None
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert fused(x).dtype == plain(x).dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.equal(fused.double()(x.double()), plain.double()(x.double()))
