"""One video step for a batch of objects on one frame: memory conditioning, SAM heads, memory encoding.

Functions of the network only (no bookkeeping): the tracker and the offline video predictor decide which
memories each object sees and call these. Shapes use B objects, s = embedding side, S = model input side.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .sam2_model import SAM2Model

NO_OBJ_SCORE = -1024.0  # logit given to every pixel of an object judged absent
MASK_AS_OUTPUT_SCALE, MASK_AS_OUTPUT_BIAS = 20.0, -10.0


@dataclass
class FrameFeatures:
    """A frame's backbone output, batch 1; expanded per object when used."""

    vision: torch.Tensor  # (1, 256, s, s) stride-16 features, no memory
    vision_pos: torch.Tensor  # (1, 256, s, s)
    high_res: list[torch.Tensor]  # [(1, 32, 4s, 4s), (1, 64, 2s, 2s)], conv_s0/s1 applied

    def expand(self, b: int) -> "FrameFeatures":
        return FrameFeatures(
            self.vision.expand(b, -1, -1, -1), self.vision_pos.expand(b, -1, -1, -1),
            [h.expand(b, -1, -1, -1) for h in self.high_res],
        )


@dataclass
class HeadOutput:
    """Per object: the chosen mask (low and model resolution), its pointer and presence logit."""

    low_res: torch.Tensor  # (B, 1, 4s, 4s) float32 logits
    high_res: torch.Tensor  # (B, 1, S, S) float32 logits
    obj_ptr: torch.Tensor  # (B, 256)
    score: torch.Tensor  # (B, 1) object score logit, > 0 = present
    iou: torch.Tensor  # (B, 1) predicted IoU of the chosen mask


def frame_features(model: SAM2Model, image: torch.Tensor) -> FrameFeatures:
    """(1, 3, S, S) normalised frame -> its features."""
    out = model.forward_image(image)
    return FrameFeatures(out.backbone_fpn[-1], out.vision_pos_enc[-1], out.backbone_fpn[:2])


def sine_1d(pos: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Transformer sine encoding of scalar positions: (P,) -> (P, dim), sines then cosines."""
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=pos.device)
    freqs = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / half)
    angles = pos.float()[:, None] / freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def pointer_tokens(
    model: SAM2Model, ptrs: torch.Tensor, positions: list[int], max_ptrs: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Object pointers (B, P, 256) at signed frame offsets -> tokens and encodings (B, 4P, 64).

    Each 256-d pointer is split into 256 / mem_dim tokens that share its temporal encoding.
    """
    cfg = model.cfg
    b, p, c = ptrs.shape
    mem = cfg.mem_dim
    if cfg.add_tpos_enc_to_obj_ptrs:
        t = torch.tensor(positions, device=ptrs.device, dtype=torch.float32) / max(max_ptrs - 1, 1)
        pos = model.obj_ptr_tpos_proj(sine_1d(t, c if cfg.proj_tpos_enc_in_obj_ptrs else mem))  # (P, mem)
        pos = pos.to(ptrs.dtype)[None].expand(b, -1, -1)
    else:
        pos = ptrs.new_zeros(b, p, mem)
    split = c // mem
    tokens = ptrs.reshape(b, p * split, mem)
    return tokens, pos.repeat_interleave(split, dim=1)


def condition_on_memory(
    model: SAM2Model,
    feats: FrameFeatures,
    memory: torch.Tensor,
    memory_pos: torch.Tensor,
    num_ptr_tokens: int,
) -> torch.Tensor:
    """Current features attend to memories: memory (B, M, 64) -> conditioned features (B, 256, s, s)."""
    b, c, h, w = feats.vision.shape
    curr = feats.vision.flatten(2).transpose(1, 2)  # (B, HW, C)
    curr_pos = feats.vision_pos.flatten(2).transpose(1, 2)
    out = model.memory_attention(curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens=num_ptr_tokens)
    return out.transpose(1, 2).reshape(b, c, h, w)


def without_memory(model: SAM2Model, feats: FrameFeatures) -> torch.Tensor:
    """Features of a frame that starts a track: the learned no-memory embedding is added."""
    return feats.vision + model.no_mem_embed.reshape(1, -1, 1, 1).to(feats.vision.dtype)


def sam_heads(
    model: SAM2Model,
    pix_feat: torch.Tensor,
    high_res: list[torch.Tensor],
    coords: torch.Tensor | None,
    labels: torch.Tensor | None,
    mask_input: torch.Tensor | None,
    multimask: bool,
) -> HeadOutput:
    """Decode B objects; absent objects get NO_OBJ_SCORE masks and the learned no-object pointer."""
    from .sam2_model import ImageFeatures

    b = pix_feat.shape[0]
    if coords is None:  # tracking without clicks: a single padding point
        coords = torch.zeros(b, 1, 2, device=pix_feat.device)
        labels = torch.full((b, 1), -1, dtype=torch.int64, device=pix_feat.device)
    out = model.decode(ImageFeatures(pix_feat, list(high_res)), coords, labels, mask_input, multimask)
    present = out.object_score_logits > 0  # (B, 1)
    low_all = torch.where(present[:, :, None, None], out.masks, torch.full_like(out.masks, NO_OBJ_SCORE)).float()
    best = out.iou_pred.argmax(dim=-1) if multimask else torch.zeros(b, dtype=torch.long, device=pix_feat.device)
    rows = torch.arange(b, device=pix_feat.device)
    low = low_all[rows, best][:, None]
    token = out.sam_tokens[rows, best] if out.sam_tokens.shape[1] > 1 else out.sam_tokens[:, 0]
    ptr = model.obj_ptr_proj(token)
    lam = present.to(ptr.dtype)
    ptr = lam * ptr + (1 - lam) * model.no_obj_ptr.to(ptr.dtype)
    size = model.image_size
    high = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return HeadOutput(low, high, ptr, out.object_score_logits.float(), out.iou_pred[rows, best][:, None].float())


def mask_as_output(model: SAM2Model, feats: FrameFeatures, masks: torch.Tensor) -> HeadOutput:
    """A binary mask prompt (B, 1, S, S) becomes the output itself; the decoder only makes its pointer."""
    b = masks.shape[0]
    m = masks.float()
    high = m * MASK_AS_OUTPUT_SCALE + MASK_AS_OUTPUT_BIAS
    s4 = model.cfg.embedding_size * 4
    low = F.interpolate(high, size=(s4, s4), mode="bilinear", align_corners=False, antialias=True)
    small = model.mask_downsample(m)  # (B, 1, S/4, S/4)
    ptr_heads = sam_heads(model, feats.vision, feats.high_res, None, None, small, multimask=False)
    present = (m.flatten(1) > 0).any(dim=1, keepdim=True).float()
    ptr = ptr_heads.obj_ptr
    lam = present.to(ptr.dtype)
    ptr = lam * ptr + (1 - lam) * model.no_obj_ptr.to(ptr.dtype)
    score = MASK_AS_OUTPUT_SCALE * present + MASK_AS_OUTPUT_BIAS
    return HeadOutput(low, high, ptr, score, torch.ones(b, 1, device=masks.device))


def encode_memory(
    model: SAM2Model, feats: FrameFeatures, high_res_masks: torch.Tensor, score: torch.Tensor, binarize: bool
) -> torch.Tensor:
    """Memory of B objects on this frame from their masks (B, 1, S, S) -> (B, 64, s, s)."""
    cfg = model.cfg
    probs = (high_res_masks > 0).float() if binarize else torch.sigmoid(high_res_masks)
    mask_in = probs * cfg.sigmoid_scale_for_mem_enc + cfg.sigmoid_bias_for_mem_enc
    mem, _ = model.memory_encoder(feats.vision, mask_in, skip_mask_sigmoid=True)
    if model.no_obj_embed_spatial is not None:
        absent = (score <= 0).to(mem.dtype)[:, :, None, None]  # (B, 1, 1, 1)
        mem = mem + absent * model.no_obj_embed_spatial.to(mem.dtype)[:, :, None, None]
    return mem


def memory_pos_enc(model: SAM2Model, device: torch.device) -> torch.Tensor:
    """The memories' spatial encoding, the same for every frame: (1, 64, s, s)."""
    s = model.cfg.embedding_size
    return model.memory_encoder.position_encoding(torch.zeros(1, model.cfg.mem_dim, s, s, device=device))
