"""Position encodings: 2-D sine (FPN, memory), random Fourier features (prompts), axial RoPE."""

from __future__ import annotations

import math

import torch
from torch import nn


class SinePositionEncoding(nn.Module):
    """DETR-style 2-D sine encoding of a feature map's grid; y channels first, then x.

    Depends only on the map's size, so results are cached per (H, W, device).
    """

    def __init__(self, num_pos_feats: int, temperature: float = 10000.0) -> None:
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError("num_pos_feats must be even")
        self.half = num_pos_feats // 2
        self.temperature = temperature
        self._cache: dict[tuple[int, int, str], torch.Tensor] = {}

    def _grid(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        key = (h, w, str(device))
        if key in self._cache:
            return self._cache[key]
        eps, scale = 1e-6, 2 * math.pi
        ys = torch.arange(1, h + 1, dtype=torch.float32, device=device) / (h + eps) * scale
        xs = torch.arange(1, w + 1, dtype=torch.float32, device=device) / (w + eps) * scale
        k = torch.arange(self.half, dtype=torch.float32, device=device)
        freqs = self.temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / self.half)

        def encode(t: torch.Tensor) -> torch.Tensor:  # (L,) -> (L, half), sin/cos interleaved
            a = t[:, None] / freqs
            return torch.stack((a[:, 0::2].sin(), a[:, 1::2].cos()), dim=2).flatten(1)

        ey = encode(ys)[:, None, :].expand(h, w, self.half)
        ex = encode(xs)[None, :, :].expand(h, w, self.half)
        grid = torch.cat((ey, ex), dim=2).permute(2, 0, 1).contiguous()  # (C, H, W)
        if not torch.compiler.is_compiling():  # compiled: a constant of the graph (a cache would be a guard)
            self._cache[key] = grid
        return grid

    @torch.no_grad()
    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, num_pos_feats, H, W) in the map's dtype."""
        pe = self._grid(fmap.shape[-2], fmap.shape[-1], fmap.device)
        return pe.to(fmap.dtype)[None].expand(fmap.shape[0], -1, -1, -1)


class RandomFourierEncoding(nn.Module):
    """Positional encoding of normalised (x, y) coordinates with a fixed random Gaussian projection."""

    def __init__(self, num_pos_feats: int = 128) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) in [0, 1] -> (..., 2 * num_pos_feats)."""
        proj = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        proj = 2 * math.pi * proj
        return torch.cat([proj.sin(), proj.cos()], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Dense encoding of an (h, w) grid of cell centres -> (C, h, w)."""
        h, w = size
        dev = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) / w
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2) as (x, y)
        return self._encode(grid).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Encode pixel coordinates (..., 2) given as (x, y) in an image of (H, W)."""
        h, w = image_size
        scale = torch.tensor([w, h], dtype=torch.float32, device=coords.device)
        return self._encode(coords.float() / scale)


def axial_rope_angles(dim: int, end_x: int, end_y: int, theta: float = 10000.0) -> torch.Tensor:
    """Rotation angles of 2-D axial RoPE for an end_x * end_y grid -> (end_x * end_y, dim // 2).

    The first dim // 4 rotation pairs turn with the x index, the rest with the y index.
    """
    inv = 1.0 / (theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim))
    idx = torch.arange(end_x * end_y)
    tx = (idx % end_x).float()
    ty = torch.div(idx, end_x, rounding_mode="floor").float()
    return torch.cat([torch.outer(tx, inv), torch.outer(ty, inv)], dim=-1)


def rotate_pairs(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of x (..., L, D), read as complex numbers, by unit complex (L, D/2).

    `rotations` may instead be real (L, D/2, 2) cosines and sines: the same product in real arithmetic, for
    torch.compile (inductor generates no code for complex ops and would leave them to eager kernels)."""
    if not rotations.is_complex():
        a, b = x.float().unflatten(-1, (-1, 2)).unbind(-1)
        cos, sin = rotations.unbind(-1)
        return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2).type_as(x)
    xc = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
    return torch.view_as_real(xc * rotations).flatten(-2).type_as(x)
