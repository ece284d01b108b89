"""Prompt encoder: points (labels -1/0/1/2/3), dense mask input, or the learned no-mask embedding."""

from __future__ import annotations

import torch
from torch import nn

from .conv import Conv2d
from .layers import LayerNorm2d
from .position_encoding import RandomFourierEncoding

# Point labels: -1 padding, 0 background, 1 foreground, 2 box top-left, 3 box bottom-right.
PAD_LABEL = -1


class PromptEncoder(nn.Module):
    """Encodes prompts into sparse tokens (B, N, C) and a dense map (B, C, s, s)."""

    def __init__(
        self, embed_dim: int = 256, embedding_size: int = 64, image_size: int = 1024, mask_in_chans: int = 16
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = (embedding_size, embedding_size)
        self.input_image_size = (image_size, image_size)
        self.mask_input_size = (4 * embedding_size, 4 * embedding_size)
        self.pe_layer = RandomFourierEncoding(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        quarter = mask_in_chans // 4
        self.mask_downscaling = nn.Sequential(
            Conv2d(1, quarter, kernel_size=2, stride=2),
            LayerNorm2d(quarter),
            nn.GELU(),
            Conv2d(quarter, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            Conv2d(mask_in_chans, embed_dim, 1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image embedding grid, (1, C, s, s). It depends only on the projection buffer
        and the autocast dtype, and every click and tracking step asks for it: made once for those, then kept
        (remade if the buffer is loaded, moved or edited, or the kept tensor was written to)."""
        buf = self.pe_layer.positional_encoding_gaussian_matrix
        if torch.compiler.is_compiling() or buf.is_inference():  # inference tensors keep no version to check
            return self.pe_layer(self.image_embedding_size)[None]
        dev = buf.device.type
        key = (torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None, buf._version)
        kept = self.__dict__.get("_dense_pe")
        if kept is None or kept[0] is not buf or kept[1] != key or kept[2]._version != kept[3]:
            with torch.inference_mode(False), torch.no_grad():  # an ordinary tensor, usable outside inference mode
                pe = self.pe_layer(self.image_embedding_size)[None]
            kept = self.__dict__["_dense_pe"] = (buf, key, pe, pe._version)
        return kept[2]

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """coords (B, N, 2) in input-image pixels, labels (B, N) -> (B, N [+1], C)."""
        coords = coords + 0.5  # centre of the pixel
        if pad:
            coords = torch.cat([coords, coords.new_zeros(coords.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), PAD_LABEL)], dim=1)
        emb = self.pe_layer.forward_with_coords(coords, self.input_image_size)
        emb = torch.where((labels == PAD_LABEL)[..., None], self.not_a_point_embed.weight, emb)
        for label, table in enumerate(self.point_embeddings):
            emb = emb + (labels == label)[..., None] * table.weight
        return emb

    def embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """boxes (B, 4) xyxy -> two corner tokens (B, 2, C)."""
        corners = boxes.reshape(-1, 2, 2)
        labels = torch.tensor([[2, 3]], device=boxes.device).expand(corners.shape[0], 2)
        return self.embed_points(corners, labels, pad=False)

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if points is not None:
            bs = points[0].shape[0]
        elif boxes is not None:
            bs = boxes.shape[0]
        elif masks is not None:
            bs = masks.shape[0]
        else:
            bs = 1
        dev = self.no_mask_embed.weight.device
        sparse = torch.empty((bs, 0, self.embed_dim), device=dev)
        if points is not None:
            sparse = torch.cat([sparse, self.embed_points(points[0], points[1], pad=boxes is None)], dim=1)
        if boxes is not None:
            sparse = torch.cat([sparse, self.embed_boxes(boxes)], dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            s = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, *s)
        return sparse, dense
