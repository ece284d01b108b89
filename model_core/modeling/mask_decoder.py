"""Mask decoder: output tokens through the two-way transformer, hypernetwork masks, IoU and object scores."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .conv import Conv2d, ConvTranspose2d
from .layers import MLP, LayerNorm2d
from .two_way_transformer import TwoWayTransformer


@dataclass
class DecoderOutput:
    masks: torch.Tensor  # (B, M, 4s, 4s) low-resolution logits; M = 3 (multimask) or 1
    iou_pred: torch.Tensor  # (B, M)
    sam_tokens: torch.Tensor  # (B, M', C) mask tokens matching `masks` (for object pointers)
    object_score_logits: torch.Tensor  # (B, 1) > 0 means the object is present


def stability_scores(logits: torch.Tensor, delta: float) -> torch.Tensor:
    """IoU between the masks thresholded at +delta and at -delta; 1 where both are empty. (..., H, W) -> (...)."""
    flat = logits.flatten(-2)
    inner = (flat > delta).sum(-1).float()
    outer = (flat > -delta).sum(-1).float()
    return torch.where(outer > 0, inner / outer, torch.ones_like(inner))


class MaskDecoder(nn.Module):
    """Predicts 1 + 3 masks per prompt set; single-mask output falls back to the best of three when unstable."""

    num_mask_tokens = 4

    def __init__(
        self,
        transformer_dim: int = 256,
        dynamic_multimask_via_stability: bool = True,
        stability_delta: float = 0.05,
        stability_thresh: float = 0.98,
    ) -> None:
        super().__init__()
        c = transformer_dim
        self.transformer = TwoWayTransformer(depth=2, embedding_dim=c, num_heads=8, mlp_dim=2048)
        self.iou_token = nn.Embedding(1, c)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, c)
        self.obj_score_token = nn.Embedding(1, c)
        self.output_upscaling = nn.Sequential(
            ConvTranspose2d(c, c // 4, kernel_size=2, stride=2),
            LayerNorm2d(c // 4),
            nn.GELU(),
            ConvTranspose2d(c // 4, c // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        # projections of the stride-4 and stride-8 backbone features, applied once per image
        self.conv_s0 = Conv2d(c, c // 8, kernel_size=1)
        self.conv_s1 = Conv2d(c, c // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(c, c, c // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(c, 256, self.num_mask_tokens, 3, sigmoid_output=True)
        self.pred_obj_score_head = MLP(c, c, 1, 3)
        self.stable_single_mask = dynamic_multimask_via_stability
        self.stability_delta = stability_delta
        self.stability_thresh = stability_thresh

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        repeat_image: bool,
        high_res_features: list[torch.Tensor],
    ) -> DecoderOutput:
        """image_embeddings (B or 1, C, s, s); sparse (B, N, C); dense (B, C, s, s); high_res: [(·,32,4s,4s), (·,64,2s,2s)]."""
        masks, iou, mask_tokens, obj_logits = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, repeat_image, high_res_features
        )
        if multimask_output:
            masks, iou, tokens = masks[:, 1:], iou[:, 1:], mask_tokens[:, 1:]
        elif self.stable_single_mask and not self.training:
            masks, iou = self._stable_single_mask(masks, iou)
            tokens = mask_tokens[:, :1]
        else:
            masks, iou, tokens = masks[:, :1], iou[:, :1], mask_tokens[:, :1]
        return DecoderOutput(masks, iou, tokens, obj_logits)

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        repeat_image: bool,
        high_res_features: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """All four masks (B, 4, 4s, 4s), their IoU (B, 4), mask tokens (B, 4, C), object logits (B, 1)."""
        out_tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight], dim=0)
        b = sparse.shape[0]
        tokens = torch.cat([out_tokens[None].expand(b, -1, -1).to(sparse.dtype), sparse], dim=1)
        if repeat_image and b > 1 and dense.stride(0) == 0:
            # the same image and dense prompt (no mask input) for every prompt set: keep batch 1, shared
            src, pos = image_embeddings + dense[:1], image_pe
        else:
            src = image_embeddings.repeat_interleave(b, dim=0) if repeat_image else image_embeddings
            src, pos = src + dense, image_pe.expand(b, -1, -1, -1)
        _, c, h, w = src.shape
        hs, src = self.transformer(src, pos, tokens)
        obj_token, iou_token = hs[:, 0], hs[:, 1]
        mask_tokens = hs[:, 2 : 2 + self.num_mask_tokens]

        src = src.transpose(1, 2).reshape(b, c, h, w)
        feat_s0, feat_s1 = high_res_features
        up1, norm, act1, up2, act2 = self.output_upscaling
        x = act1(norm(up1(src) + feat_s1))
        x = act2(up2(x) + feat_s0)  # (B, C/8, 4s, 4s)

        hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        masks = (hyper @ x.flatten(2)).unflatten(-1, x.shape[-2:])
        return masks, self.iou_prediction_head(iou_token), mask_tokens, self.pred_obj_score_head(obj_token)

    def _stable_single_mask(self, masks: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep the single-mask output where it is stable; elsewhere take the best-scoring multimask output."""
        best = iou[:, 1:].argmax(dim=-1)
        rows = torch.arange(masks.shape[0], device=masks.device)
        best_masks = masks[:, 1:][rows, best][:, None]
        best_iou = iou[:, 1:][rows, best][:, None]
        stable = stability_scores(masks[:, :1], self.stability_delta) >= self.stability_thresh  # (B, 1)
        out_masks = torch.where(stable[..., None, None], masks[:, :1], best_masks)
        out_iou = torch.where(stable, iou[:, :1], best_iou)
        return out_masks, out_iou
