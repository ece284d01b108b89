"""The one video step: track a batch of objects on a frame, segment prompted objects, build prompt memories.

Functions over explicit inputs, no bookkeeping: the tracker, the offline video predictor (and the service's
engine, across sessions) choose which memories each object sees and call these. A batch is B independent
objects, from one session or many, whose memory selections share one layout (`MemorySelection.layout`);
row i of every input belongs to object i. Shapes use s = embedding side, S = model input side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .mask_ops import fill_small_regions
from .memory_bank import MemoryEntry, MemorySelection, assemble_memory, memory_pos_enc
from .modeling.sam2_model import ImageFeatures, SAM2Model

NO_OBJ_SCORE = -1024.0  # logit given to every pixel of an object judged absent
MASK_AS_OUTPUT_SCALE, MASK_AS_OUTPUT_BIAS = 20.0, -10.0
HOLE_LOGIT = 0.1  # what a filled hole becomes: weakly foreground


@dataclass
class FrameFeatures:
    """Backbone output of B rows (one frame, or one row per object of a batch)."""

    vision: torch.Tensor  # (B, 256, s, s) stride-16 features, no memory
    vision_pos: torch.Tensor  # (B, 256, s, s)
    high_res: list[torch.Tensor]  # [(B, 32, 4s, 4s), (B, 64, 2s, 2s)], conv_s0/s1 applied

    def expand(self, b: int) -> "FrameFeatures":
        """A one-frame (batch 1) result repeated for b objects, without copying."""
        return FrameFeatures(
            self.vision.expand(b, -1, -1, -1), self.vision_pos.expand(b, -1, -1, -1),
            [h.expand(b, -1, -1, -1) for h in self.high_res],
        )

    def row(self, i: int) -> "FrameFeatures":
        """Frame i alone (batch 1), without copying."""
        return FrameFeatures(self.vision[i : i + 1], self.vision_pos[i : i + 1], [h[i : i + 1] for h in self.high_res])

    @staticmethod
    def cat(parts: Sequence["FrameFeatures"]) -> "FrameFeatures":
        """Rows of several frames (e.g. of different sessions) as one batch."""
        if len(parts) == 1:
            return parts[0]
        return FrameFeatures(
            torch.cat([p.vision for p in parts]), torch.cat([p.vision_pos for p in parts]),
            [torch.cat(level) for level in zip(*(p.high_res for p in parts))],
        )


@dataclass
class HeadOutput:
    """Per object: the chosen mask (low and model resolution), its pointer and presence logit."""

    low_res: torch.Tensor  # (B, 1, 4s, 4s) float32 logits
    high_res: torch.Tensor  # (B, 1, S, S) float32 logits
    obj_ptr: torch.Tensor  # (B, 256)
    object_score_logit: torch.Tensor  # (B, 1), > 0 = present
    iou: torch.Tensor  # (B, 1) predicted IoU of the chosen mask

    def row(self, i: int) -> "HeadOutput":
        """Object i alone (batch 1)."""
        return HeadOutput(self.low_res[i : i + 1], self.high_res[i : i + 1], self.obj_ptr[i : i + 1],
                          self.object_score_logit[i : i + 1], self.iou[i : i + 1])

    def memory_entry(self, i: int, maskmem: torch.Tensor | None) -> MemoryEntry:
        """What object i leaves in its memory: maskmem (64, s, s) or None (encoded later)."""
        return MemoryEntry(maskmem, self.obj_ptr[i], self.object_score_logit[i], self.low_res[i])


@dataclass
class TrackedBatch:
    """A tracking step's result for B objects: their (hole-filled) outputs and new memories."""

    heads: HeadOutput
    maskmem: torch.Tensor | None  # (B, 64, s, s); None where the step keeps no memory

    def memory_entry(self, i: int) -> MemoryEntry:
        return self.heads.memory_entry(i, None if self.maskmem is None else self.maskmem[i])


# ---- the steps ----------------------------------------------------------------------------------


def track_objects(
    model: SAM2Model,
    feats: FrameFeatures,
    selections: Sequence[MemorySelection],
    fill_hole_area: int = 0,
    remember: bool = True,
) -> TrackedBatch:
    """Track B objects without prompts on their frames: memory attention, SAM heads, new memory.

    feats has B rows (row i: object i's frame); selections[i] is object i's memory, all of one layout.
    remember=False skips the memory encoder (independent images that add no memory).
    """
    pix = conditioned_features(model, feats, selections)
    heads = sam_heads(model, pix, feats.high_res, None, None, None, multimask=True)
    maskmem = (
        encode_memory(model, feats, heads.high_res, heads.object_score_logit, binarize=False) if remember else None
    )
    heads.low_res = fill_holes(heads.low_res, fill_hole_area)
    return TrackedBatch(heads, maskmem)


def segment_prompted(
    model: SAM2Model,
    feats: FrameFeatures,
    selections: Sequence[MemorySelection] | None,
    coords: torch.Tensor | None,
    labels: torch.Tensor | None,
    mask: torch.Tensor | None,
    prev_logits: torch.Tensor | None = None,
    fill_hole_area: int = 0,
) -> HeadOutput:
    """B objects prompted on their frames -> hole-filled outputs.

    Either clicks/boxes coords (B, N, 2) with labels (B, N), decoded against the objects' memories
    (selections) or, on a conditioning frame (selections None), against none; prev_logits (B, 1, 4s, 4s)
    are the masks being refined. Or a binary mask (B, 1, S, S) that becomes the output itself.
    """
    if mask is not None:
        out = mask_as_output(model, feats, mask)
    else:
        pix = conditioned_features(model, feats, selections)
        out = sam_heads(model, pix, feats.high_res, coords, labels, prev_logits, multimask=coords.shape[1] <= 1)
    out.low_res = fill_holes(out.low_res, fill_hole_area)
    return out


def prompt_memory(
    model: SAM2Model, feats: FrameFeatures, low_res: torch.Tensor, object_score_logit: torch.Tensor
) -> torch.Tensor:
    """Memory of B prompted objects from their (hole-filled) low-res masks (B, 1, 4s, 4s), binarised as
    Meta's preflight does -> (B, 64, s, s)."""
    size = model.image_size
    high = F.interpolate(low_res, size=(size, size), mode="bilinear", align_corners=False)
    return encode_memory(model, feats, high, object_score_logit, binarize=True)


# ---- their parts ----------------------------------------------------------------------------------


def frame_features(model: SAM2Model, image: torch.Tensor) -> FrameFeatures:
    """(B, 3, S, S) normalised frames -> their features."""
    out = model.forward_image(image)
    return FrameFeatures(out.backbone_fpn[-1], out.vision_pos_enc[-1], out.backbone_fpn[:2])


def conditioned_features(
    model: SAM2Model, feats: FrameFeatures, selections: Sequence[MemorySelection] | None
) -> torch.Tensor:
    """The features the heads see (B, 256, s, s): attending to the selected memories, or, with none (a frame
    that starts or re-prompts a track), plus the learned no-memory embedding."""
    if selections is None:
        return feats.vision + model.no_mem_embed.reshape(1, -1, 1, 1).to(feats.vision.dtype)
    memory, memory_pos, n_ptr = assemble_memory(model, list(selections), memory_pos_enc(model, feats.vision.device))
    b, c, h, w = feats.vision.shape
    curr = feats.vision.flatten(2).transpose(1, 2)  # (B, HW, C)
    curr_pos = feats.vision_pos.flatten(2).transpose(1, 2)
    out = model.memory_attention(curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens=n_ptr)
    return out.transpose(1, 2).reshape(b, c, h, w)


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
    object_score_logit = MASK_AS_OUTPUT_SCALE * present + MASK_AS_OUTPUT_BIAS
    return HeadOutput(low, high, ptr, object_score_logit, torch.ones(b, 1, device=masks.device))


def encode_memory(
    model: SAM2Model, feats: FrameFeatures, high_res_masks: torch.Tensor, object_score_logit: torch.Tensor,
    binarize: bool,
) -> torch.Tensor:
    """Memory of B objects on their frames from their masks (B, 1, S, S) -> (B, 64, s, s)."""
    cfg = model.cfg
    probs = (high_res_masks > 0).float() if binarize else torch.sigmoid(high_res_masks)
    mask_in = probs * cfg.sigmoid_scale_for_mem_enc + cfg.sigmoid_bias_for_mem_enc
    mem, _ = model.memory_encoder(feats.vision, mask_in, skip_mask_sigmoid=True)
    if model.no_obj_embed_spatial is not None:
        absent = (object_score_logit <= 0).to(mem.dtype)[:, :, None, None]  # (B, 1, 1, 1)
        mem = mem + absent * model.no_obj_embed_spatial.to(mem.dtype)[:, :, None, None]
    return mem


def fill_holes(low_res: torch.Tensor, area: int) -> torch.Tensor:
    """Background holes up to `area` low-res pixels become weakly foreground (Meta's fill_hole_area)."""
    return fill_small_regions(low_res, 0.0, area, HOLE_LOGIT)
