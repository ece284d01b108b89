"""Memory encoder: fuses a frame's features with its (downsampled) predicted mask into a 64-channel memory."""

from __future__ import annotations

import math

import torch
from torch import nn

from .conv import Conv2d
from .layers import LayerNorm2d
from .linear import Linear
from .position_encoding import SinePositionEncoding


class MaskDownSampler(nn.Module):
    """Strided 3x3 convs that take a mask at 16x the embedding's resolution down to it, widening 4x per step."""

    def __init__(self, embed_dim: int = 256, total_stride: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for _ in range(int(math.log2(total_stride))):
            c_out = c_in * 4
            layers += [Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1), LayerNorm2d(c_out), nn.GELU()]
            c_in = c_out
        layers.append(Conv2d(c_in, embed_dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(mask)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7 conv, LayerNorm, pointwise MLP with layer scale, residual."""

    def __init__(self, dim: int = 256, kernel_size: int = 7) -> None:
        super().__init__()
        self.dwconv = Conv2d(dim, dim, kernel_size=kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.pwconv1 = Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = Linear(4 * dim, dim)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(fmap)).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return fmap + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    def __init__(self, dim: int = 256, num_layers: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim) for _ in range(num_layers))

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            fmap = layer(fmap)
        return fmap


class MemoryEncoder(nn.Module):
    """(pixel features (B, 256, s, s), mask logits (B, 1, 16s, 16s)) -> memory (B, 64, s, s) and its encoding."""

    def __init__(self, in_dim: int = 256, out_dim: int = 64) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownSampler(in_dim)
        self.pix_feat_proj = Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = Fuser(in_dim)
        self.position_encoding = SinePositionEncoding(out_dim)
        self.out_proj = Conv2d(in_dim, out_dim, kernel_size=1)

    def forward(
        self, pix_feat: torch.Tensor, masks: torch.Tensor, skip_mask_sigmoid: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not skip_mask_sigmoid:
            masks = torch.sigmoid(masks)
        x = self.pix_feat_proj(pix_feat) + self.mask_downsampler(masks)
        x = self.out_proj(self.fuser(x))
        return x, self.position_encoding(x)
