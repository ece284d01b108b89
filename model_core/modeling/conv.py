"""nn.Conv2d and nn.ConvTranspose2d (same parameters and checkpoint keys) that keep their autocast weight copies."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .autocast_weights import autocast_weights


class Conv2d(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, *autocast_weights(self, x))


class ConvTranspose2d(nn.ConvTranspose2d):
    """Called without `output_size`, as every use here is."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = autocast_weights(self, x)
        return F.conv_transpose2d(x, weight, bias, self.stride, self.padding, self.output_padding, self.groups,
                                  self.dilation)
