"""The SAM 2 network as one module: its parts and top-level parameters, named as Meta's checkpoints name them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import ModelConfig
from .conv import Conv2d
from .image_encoder import ImageEncoder
from .layers import MLP
from .linear import Linear
from .mask_decoder import DecoderOutput, MaskDecoder
from .memory_attention import MemoryAttention
from .memory_encoder import MemoryEncoder
from .prompt_encoder import PromptEncoder


@dataclass
class ImageFeatures:
    """What the decoder needs from one or more images; the unit the service caches.

    image_embed already includes `no_mem_embed` (what a frame without memory sees).
    """

    image_embed: torch.Tensor  # (B, 256, s, s)
    high_res_feats: list[torch.Tensor]  # [(B, 32, 4s, 4s), (B, 64, 2s, 2s)]

    def __getitem__(self, i: int) -> "ImageFeatures":
        return ImageFeatures(self.image_embed[i : i + 1], [f[i : i + 1] for f in self.high_res_feats])

    @property
    def batch_size(self) -> int:
        return self.image_embed.shape[0]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [self.image_embed, *self.high_res_feats])

    def to(self, *args, **kwargs) -> "ImageFeatures":
        return ImageFeatures(self.image_embed.to(*args, **kwargs), [f.to(*args, **kwargs) for f in self.high_res_feats])


class SAM2Model(nn.Module):
    """Image encoder, prompt encoder, mask decoder, memory encoder and memory attention of SAM 2 / 2.1."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, mem = cfg.d_model, cfg.mem_dim
        self.image_encoder = ImageEncoder(cfg.hiera, c)
        self.memory_attention = MemoryAttention(c, mem, cfg.memory_attention_layers)
        self.memory_encoder = MemoryEncoder(c, mem)
        self.sam_prompt_encoder = PromptEncoder(c, cfg.embedding_size, cfg.image_size)
        self.sam_mask_decoder = MaskDecoder(
            c,
            cfg.dynamic_multimask_via_stability,
            cfg.dynamic_multimask_stability_delta,
            cfg.dynamic_multimask_stability_thresh,
        )
        # memory: temporal encodings of the num_maskmem memory slots, and the "no memory" embeddings
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(cfg.num_maskmem, 1, 1, mem))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, c))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, c))
        # object pointers: projection of the decoder's token, the "object absent" pointer, temporal projection
        self.mask_downsample = Conv2d(1, 1, kernel_size=4, stride=4)
        self.obj_ptr_proj = MLP(c, c, c, 3)
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, c))
        self.obj_ptr_tpos_proj = Linear(c, mem) if cfg.proj_tpos_enc_in_obj_ptrs else nn.Identity()
        if cfg.no_obj_embed_spatial:
            self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, mem))
        else:
            self.no_obj_embed_spatial = None
        for p in (self.maskmem_tpos_enc, self.no_mem_embed, self.no_mem_pos_enc, self.no_obj_ptr):
            nn.init.trunc_normal_(p, std=0.02)
        if cfg.no_obj_embed_spatial:
            nn.init.trunc_normal_(self.no_obj_embed_spatial, std=0.02)

    @property
    def device(self) -> torch.device:
        return self.no_mem_embed.device

    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    def forward_image(self, images: torch.Tensor):
        """(B, 3, S, S) normalised -> BackboneOutput whose two fine levels are already projected by conv_s0/s1."""
        out = self.image_encoder(images)
        dec = self.sam_mask_decoder
        out.backbone_fpn[0] = dec.conv_s0(out.backbone_fpn[0])
        out.backbone_fpn[1] = dec.conv_s1(out.backbone_fpn[1])
        return out

    def image_features(self, images: torch.Tensor) -> ImageFeatures:
        """Encode images for prompt decoding without memory (the image-predictor path)."""
        out = self.forward_image(images)
        embed = out.vision_features + self.no_mem_embed.reshape(1, -1, 1, 1).to(out.vision_features.dtype)
        return ImageFeatures(embed, out.backbone_fpn[:2])

    def decode(
        self,
        feats: ImageFeatures,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
    ) -> DecoderOutput:
        """Prompts for B objects on one image (feats of batch 1, repeated) or on B images (feats of batch B).

        point_coords (B, N, 2) in model-input pixels, labels (B, N) in {0, 1, 2, 3}; mask_input (B, 1, 4s, 4s) logits.
        """
        points = None if point_coords is None else (point_coords, point_labels)
        if mask_input is not None and mask_input.shape[-2:] != self.sam_prompt_encoder.mask_input_size:
            mask_input = F.interpolate(
                mask_input.float(), self.sam_prompt_encoder.mask_input_size, mode="bilinear", align_corners=False,
                antialias=True,
            )
        sparse, dense = self.sam_prompt_encoder(points, None, mask_input)
        repeat = feats.batch_size == 1 and sparse.shape[0] > 1
        return self.sam_mask_decoder(
            feats.image_embed,
            self.sam_prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            multimask_output=multimask_output,
            repeat_image=repeat,
            high_res_features=feats.high_res_feats,
        )
