"""The Hiera trunk keeps its interpolated position embedding between passes, and drops it when weights change."""

from __future__ import annotations

import torch

from model_core import build_model


def test_position_embedding_follows_weights_loaded_after_a_pass():
    torch.manual_seed(0)
    a = build_model("sam2.1_t", weights="random", image_size=128)
    b = build_model("sam2.1_t", weights="random", image_size=128)
    with torch.no_grad():
        b.image_encoder.trunk.pos_embed.normal_()
        b.image_encoder.trunk.pos_embed_window.normal_()
    x = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        first = a.image_encoder.trunk(x)[-1]
        assert torch.equal(a.image_encoder.trunk(x)[-1], first)  # from the kept embedding: the same
        a.load_state_dict(b.state_dict())
        assert torch.equal(a.image_encoder.trunk(x)[-1], b.image_encoder.trunk(x)[-1])
        assert not torch.allclose(a.image_encoder.trunk(x)[-1], first)


def test_position_embedding_is_not_kept_while_training():
    model = build_model("sam2.1_t", weights="random", image_size=128)
    trunk = model.image_encoder.trunk.requires_grad_(True)
    trunk(torch.randn(1, 3, 128, 128))[-1].sum().backward()
    assert trunk.pos_embed.grad is not None and trunk.pos_embed.grad.abs().sum() > 0
    assert trunk._pos_cache is None
