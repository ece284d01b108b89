"""Multi-head attention with separate q/k/v projections, and its axial-RoPE variant for memory attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .linear import Linear
from .position_encoding import axial_rope_angles, rotate_pairs


class Attention(nn.Module):
    """Attention that may project to a smaller inner width (`downsample_rate`) and take keys of another width."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        dropout: float = 0.0,
        kv_in_dim: int | None = None,
    ) -> None:
        super().__init__()
        kv_in_dim = kv_in_dim or embedding_dim
        self.internal_dim = inner = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if inner % num_heads:
            raise ValueError("num_heads must divide embedding_dim // downsample_rate")
        self.q_proj = Linear(embedding_dim, inner)
        self.k_proj = Linear(kv_in_dim, inner)
        self.v_proj = Linear(kv_in_dim, inner)
        self.out_proj = Linear(inner, embedding_dim)
        self.dropout_p = dropout

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (B, N, C) -> (B, nH, N, C/nH)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        p = self.dropout_p if self.training else 0.0
        if q.shape[0] == 1 and k.shape[0] > 1:  # one shared set of queries (image tokens) for B prompt sets
            q = q.expand(k.shape[0], -1, -1, -1)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return self.out_proj(out.transpose(1, 2).flatten(2))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        return self._attend(q, k, v)


class RoPEAttention(Attention):
    """Attention with 2-D axial rotary encodings on queries and on the spatial part of the keys.

    Keys may hold several memory frames (the query grid's rotation repeats for each) followed by
    `num_k_exclude_rope` object-pointer tokens that are not rotated.
    """

    def __init__(
        self,
        *args,
        rope_theta: float = 10000.0,
        rope_k_repeat: bool = False,
        feat_sizes: tuple[int, int] = (64, 64),
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        self._angles: dict[tuple[int, str], torch.Tensor] = {}
        self._head_dim = self.internal_dim // self.num_heads

    def _rotations(self, n: int, device: torch.device) -> torch.Tensor:
        """Unit complex rotations for a square grid of n tokens: (n, D / 2); compiled, as real (n, D / 2, 2)
        cosines and sines (see rotate_pairs)."""
        key = (n, str(device))
        compiling = torch.compiler.is_compiling()
        if key in self._angles and not compiling:
            return self._angles[key]
        side = int(round(n**0.5))
        if side * side != n:
            raise ValueError(f"RoPE attention needs a square token grid, got {n} tokens")
        ang = axial_rope_angles(self._head_dim, side, side, self.rope_theta).to(device)
        if compiling:  # a constant of the graph (a cache would be a guard), in reals
            return torch.stack([ang.cos(), ang.sin()], dim=-1)
        rotations = torch.polar(torch.ones_like(ang), ang)
        self._angles[key] = rotations
        return rotations

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_k_exclude_rope: int = 0
    ) -> torch.Tensor:
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        nq = q.shape[-2]
        rotations = self._rotations(nq, q.device)
        q = rotate_pairs(q, rotations)
        n_rope = k.shape[-2] - num_k_exclude_rope
        if n_rope > 0:
            if n_rope != nq and not self.rope_k_repeat:
                raise ValueError("keys and queries differ in length but rope_k_repeat is off")
            # keys of several memory frames, each a grid like the queries': each frame gets the same rotations
            k_rot = rotate_pairs(k[:, :, :n_rope].unflatten(2, (-1, nq)), rotations).flatten(2, 3)
            k = torch.cat([k_rot, k[:, :, n_rope:]], dim=2) if num_k_exclude_rope else k_rot
        return self._attend(q, k, v)
