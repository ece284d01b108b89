"""Image encoder: the Hiera trunk followed by an FPN neck that maps every level to d_model channels."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import HieraConfig
from .conv import Conv2d
from .hiera import Hiera
from .position_encoding import SinePositionEncoding


@dataclass
class BackboneOutput:
    """FPN features and their sine encodings, finest level first; `vision_features` is the coarsest."""

    backbone_fpn: list[torch.Tensor]  # [(B, 256, 4s, 4s), (B, 256, 2s, 2s), (B, 256, s, s)]
    vision_pos_enc: list[torch.Tensor]

    @property
    def vision_features(self) -> torch.Tensor:
        return self.backbone_fpn[-1]


class FpnNeck(nn.Module):
    """1x1 lateral convs per level plus nearest-upsampled top-down sums on the coarse levels."""

    def __init__(
        self, backbone_channel_list: tuple[int, ...], d_model: int = 256, top_down_levels: tuple[int, ...] = (2, 3)
    ) -> None:
        super().__init__()
        self.position_encoding = SinePositionEncoding(d_model)
        self.convs = nn.ModuleList()
        for dim in backbone_channel_list:  # deepest level first, as the checkpoints store them
            lateral = nn.Sequential()
            lateral.add_module("conv", Conv2d(dim, d_model, kernel_size=1))
            self.convs.append(lateral)
        self.top_down_levels = set(top_down_levels)

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        n = len(feats)
        outs: list[torch.Tensor] = [None] * n  # type: ignore[list-item]
        above = None
        for level in reversed(range(n)):
            x = self.convs[n - 1 - level](feats[level])
            if level in self.top_down_levels and above is not None:
                up = F.interpolate(above.float(), scale_factor=2.0, mode="nearest")
                x = x + up.to(x.dtype)
            above = outs[level] = x
        return outs, [self.position_encoding(x) for x in outs]


class ImageEncoder(nn.Module):
    """Trunk + neck; drops the coarsest `scalp` levels, as SAM 2 uses only strides 4, 8 and 16."""

    def __init__(self, hiera: HieraConfig, d_model: int = 256, scalp: int = 1) -> None:
        super().__init__()
        self.trunk = Hiera(hiera)
        self.neck = FpnNeck(hiera.channel_list, d_model)
        self.scalp = scalp

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        fpn, pos = self.neck(self.trunk(images))
        if self.scalp:
            fpn, pos = fpn[: -self.scalp], pos[: -self.scalp]
        return BackboneOutput(backbone_fpn=fpn, vision_pos_enc=pos)
