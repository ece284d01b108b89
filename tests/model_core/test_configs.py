import pytest

from model_core.configs import CONFIGS, canonical_name, get_config


@pytest.mark.parametrize(
    "alias, canonical",
    [
        ("sam2.1_t", "sam2.1_hiera_tiny"),
        ("sam2.1_s", "sam2.1_hiera_small"),
        ("sam2.1_b", "sam2.1_hiera_base_plus"),
        ("sam2.1_l", "sam2.1_hiera_large"),
        ("sam2_t", "sam2_hiera_tiny"),
        ("sam2_b.pt", "sam2_hiera_base_plus"),
        ("sam2.1_hiera_b+", "sam2.1_hiera_base_plus"),
        ("SAM2.1_HIERA_LARGE", "sam2.1_hiera_large"),
        ("sam2_hiera_small", "sam2_hiera_small"),
    ],
)
def test_every_familiar_name_resolves(alias, canonical):
    assert canonical_name(alias) == canonical


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="sam2.1_t"):
        canonical_name("sam3_t")


def test_eight_models_with_the_2_0_vs_2_1_flags():
    assert len(CONFIGS) == 8
    for name, cfg in CONFIGS.items():
        is_21 = name.startswith("sam2.1")
        assert cfg.no_obj_embed_spatial is is_21
        assert cfg.proj_tpos_enc_in_obj_ptrs is is_21
        assert cfg.use_signed_tpos_enc_to_obj_ptrs is is_21
        assert cfg.add_tpos_enc_to_obj_ptrs is is_21


def test_image_size_can_be_lowered_to_a_multiple_of_32():
    cfg = get_config("sam2.1_t", image_size=512)
    assert cfg.image_size == 512 and cfg.embedding_size == 32
    assert cfg.feat_sizes == ((128, 128), (64, 64), (32, 32))
    with pytest.raises(ValueError, match="multiple of 32"):
        get_config("sam2.1_t", image_size=500)
