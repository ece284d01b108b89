"""model_loading: the one place names, checkpoint paths and Ultralytics device strings become a SAM2Model."""

import pytest
import torch

from model_core.model_loading import load_model, model_name, resolve_device


@pytest.mark.parametrize("text, device", [
    ("cpu", "cpu"), ("0", "cuda:0"), (0, "cuda:0"), ("0,1", "cuda:0"), ("1, 0", "cuda:1"), ("cuda:1", "cuda:1"),
    (" CPU ", "cpu"), (torch.device("cpu"), "cpu"),
])
def test_ultralytics_device_strings(text, device):
    assert resolve_device(text) == torch.device(device)


def test_no_device_means_a_gpu_when_there_is_one():
    auto = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("") == auto


def test_an_unknown_device_is_refused_clearly():
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        resolve_device("gpu")


@pytest.mark.parametrize("spec", ["sam2.1_t", "sam2.1_t.pt", "SAM2.1_hiera_tiny", "sam2.1_hiera_t.pt"])
def test_names_users_type(spec):
    assert model_name(spec) == "sam2.1_hiera_tiny"


@pytest.mark.parametrize("spec, text", [
    ("weights/sam2.1_t.pt", "no checkpoint file at weights/sam2.1_t.pt"),
    ("finetune.ckpt", "no checkpoint file at finetune.ckpt"),
    ("yolo11n.pt", "'yolo11n.pt' is neither a checkpoint file nor a known model name"),
    ("", "model must be a name"),
])
def test_missing_files_and_unknown_names_are_refused_clearly(spec, text):
    with pytest.raises(ValueError, match=text):
        load_model(spec, weights="random", device="cpu")


def test_a_name_with_random_weights_or_a_renamed_checkpoint(tmp_path):
    model = load_model("sam2.1_t", weights="random", device="cpu", image_size=128)
    assert model.cfg.name == "sam2.1_hiera_tiny" and model.cfg.image_size == 128 and model.random_weights
    torch.save({"model": model.state_dict()}, tmp_path / "my_finetune.pt")
    again = load_model(tmp_path / "my_finetune.pt", device="cpu", image_size=128)  # model told by its parameters
    assert again.cfg.name == "sam2.1_hiera_tiny" and not again.random_weights
    assert torch.equal(again.state_dict()["maskmem_tpos_enc"], model.state_dict()["maskmem_tpos_enc"])
