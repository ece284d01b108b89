"""Each network part gives the reference's numbers on the same weights and inputs (fp32)."""

import pytest
import torch

from tests.reference import max_rel_diff, ours_from_reference, reference_model



@pytest.fixture(autouse=True)
def no_grad():
    """Forward passes only, and for each test alone (not the whole process from this module's import on)."""
    with torch.no_grad():
        yield


def _pair(name, image_size=None):
    ref = reference_model(name, image_size)
    return ref, ours_from_reference(ref, name, image_size)


def _image(size, seed=1):
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["sam2.1_hiera_tiny", "sam2.1_hiera_base_plus"])
def test_backbone_features_and_position_encodings_match_at_1024(name):
    ref, ours = _pair(name)
    x = _image(1024)
    expected = ref.forward_image(x)
    got = ours.forward_image(x)
    assert len(got.backbone_fpn) == len(expected["backbone_fpn"]) == 3
    for e, g in zip(expected["backbone_fpn"], got.backbone_fpn):
        assert e.shape == g.shape
        assert max_rel_diff(e, g) <= 1e-4
    for e, g in zip(expected["vision_pos_enc"], got.vision_pos_enc):
        assert max_rel_diff(e, g) <= 1e-4


@pytest.fixture(scope="module")
def tiny_features():
    """Reference backbone output of a 1024 px random image, prepared as SAM2ImagePredictor does."""
    ref, ours = _pair("sam2.1_hiera_tiny")
    with torch.no_grad():  # set up before the per-test no_grad
        out = ref.forward_image(_image(1024, seed=2))
        embed = out["vision_features"] + ref.no_mem_embed.reshape(1, -1, 1, 1)
    return ref, ours, embed, out["backbone_fpn"][:2]


def _prompts(kind):
    g = torch.Generator().manual_seed(3)
    pts = torch.rand(2, 3, 2, generator=g) * 1024
    if kind == "points":
        return pts, torch.tensor([[1, 0, 1], [1, 1, 0]]), None
    box = torch.tensor([[[100.0, 150.0], [600.0, 700.0]], [[300.0, 50.0], [900.0, 500.0]]])
    box_labels = torch.tensor([[2, 3], [2, 3]])
    if kind == "box":
        return box, box_labels, None
    if kind == "box+points":
        return torch.cat([box, pts], 1), torch.cat([box_labels, torch.tensor([[1, 0, 1], [0, 1, 1]])], 1), None
    mask = torch.randn(2, 1, 256, 256, generator=g) * 8
    return pts[:, :1], torch.tensor([[1], [1]]), mask


@pytest.mark.parametrize("kind", ["points", "box", "box+points", "mask"])
@pytest.mark.parametrize("multimask", [True, False])
def test_decoder_matches_for_points_boxes_and_mask_input(tiny_features, kind, multimask):
    ref, ours, embed, high_res = tiny_features
    coords, labels, mask = _prompts(kind)
    sparse, dense = ref.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=mask)
    e_masks, e_iou, _, e_obj = ref.sam_mask_decoder(
        image_embeddings=embed, image_pe=ref.sam_prompt_encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense, multimask_output=multimask, repeat_image=True, high_res_features=high_res,
    )
    from model_core.modeling.sam2_model import ImageFeatures

    got = ours.decode(ImageFeatures(embed, list(high_res)), coords, labels, mask, multimask)
    assert got.masks.shape == e_masks.shape
    assert (got.masks - e_masks).abs().max() <= 1e-3
    assert (got.iou_pred - e_iou).abs().max() <= 1e-3
    assert (got.object_score_logits - e_obj).abs().max() <= 1e-3


def test_memory_encoder_matches():
    ref, ours = _pair("sam2.1_hiera_tiny", 512)
    g = torch.Generator().manual_seed(4)
    pix = torch.randn(2, 256, 32, 32, generator=g)
    masks = torch.randn(2, 1, 512, 512, generator=g) * 5
    expected = ref.memory_encoder(pix, masks, skip_mask_sigmoid=False)
    feats, pos = ours.memory_encoder(pix, masks)
    assert max_rel_diff(expected["vision_features"], feats) <= 1e-4
    assert max_rel_diff(expected["vision_pos_enc"][0], pos) <= 1e-4


@pytest.mark.parametrize("num_ptr_tokens", [0, 8])
def test_memory_attention_matches_with_and_without_object_pointers(num_ptr_tokens):
    ref, ours = _pair("sam2.1_hiera_tiny", 512)
    g = torch.Generator().manual_seed(5)
    hw, b, n_mem = 32 * 32, 2, 3
    curr = torch.randn(hw, b, 256, generator=g)
    curr_pos = torch.randn(hw, b, 256, generator=g)
    memory = torch.randn(n_mem * hw + num_ptr_tokens, b, 64, generator=g)
    memory_pos = torch.randn(n_mem * hw + num_ptr_tokens, b, 64, generator=g)
    expected = ref.memory_attention(
        curr=curr, curr_pos=curr_pos, memory=memory, memory_pos=memory_pos, num_obj_ptr_tokens=num_ptr_tokens
    )  # (HW, B, C), sequence first
    got = ours.memory_attention(
        curr.transpose(0, 1), curr_pos.transpose(0, 1), memory.transpose(0, 1), memory_pos.transpose(0, 1),
        num_obj_ptr_tokens=num_ptr_tokens,
    )
    assert max_rel_diff(expected, got.transpose(0, 1)) <= 1e-4
