"""Our module tree takes Meta's checkpoints unchanged, for all eight released models."""

import pytest
import torch

from model_core import SAM2Model, build_model, get_config
from model_core.configs import CONFIGS
from model_core.weights import CheckpointError, read_state_dict
from tests.reference import build_reference


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_reference_checkpoint_loads_strictly(name, tmp_path):
    ref_sd = build_reference(name).state_dict()
    with torch.device("meta"):
        ours = SAM2Model(get_config(name))
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref_sd.items()}

    path = tmp_path / f"{name}.pt"
    torch.save({"model": ref_sd}, path)  # Meta's layout
    model = build_model(name, weights=path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, ref_sd[key]), key
    path.unlink()


@pytest.mark.parametrize("name", ["sam2.1_hiera_tiny", "sam2_hiera_tiny"])
def test_fp16_checkpoint_loads_like_ultralytics_files(name, tmp_path):
    ref_sd = build_reference(name).state_dict()
    path = tmp_path / "sam2_t.pt"
    torch.save({"model": {k: v.half() if v.is_floating_point() else v for k, v in ref_sd.items()}}, path)
    model = build_model(name, weights=path)
    assert model.no_mem_embed.dtype == torch.float32
    torch.testing.assert_close(model.no_mem_embed, ref_sd["no_mem_embed"].half().float())


def test_wrong_checkpoint_names_keys_and_the_model_it_looks_like(tmp_path):
    path = tmp_path / "sam2_hiera_tiny.pt"
    torch.save({"model": build_reference("sam2_hiera_tiny").state_dict()}, path)
    with pytest.raises(CheckpointError) as err:
        build_model("sam2.1_t", weights=path)
    msg = str(err.value)
    assert "missing" in msg and "no_obj_embed_spatial" in msg
    assert "looks like sam2_hiera_tiny" in msg


def test_a_file_without_tensors_is_refused(tmp_path):
    path = tmp_path / "notes.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(CheckpointError, match="no state dict"):
        read_state_dict(path)
