"""Small building blocks shared by several networks: a plain MLP and channel-first LayerNorm."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .linear import Linear


class MLP(nn.Module):
    """`num_layers` Linear layers with an activation between them (keys `layers.{i}`)."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        activation: type[nn.Module] = nn.ReLU,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = activation()
        self.sigmoid_output = sigmoid_output

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x, last = inputs, len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.act(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        # normalise in (B, H, W, C) layout, where layer_norm's last-axis kernel applies
        y = F.layer_norm(fmap.permute(0, 2, 3, 1), (fmap.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)
