"""Memory attention: conditions the current frame's features on past memories and object pointers."""

from __future__ import annotations

import torch
from torch import nn

from .attention import RoPEAttention
from .linear import Linear


class MemoryAttentionLayer(nn.Module):
    """RoPE self-attention, RoPE cross-attention to memories (keys carry their position encoding), FFN."""

    def __init__(self, d_model: int = 256, mem_dim: int = 64, dim_feedforward: int = 2048, dropout: float = 0.1) -> None:
        super().__init__()
        self.self_attn = RoPEAttention(d_model, num_heads=1, dropout=dropout)
        self.cross_attn_image = RoPEAttention(d_model, num_heads=1, dropout=dropout, kv_in_dim=mem_dim, rope_k_repeat=True)
        self.linear1 = Linear(d_model, dim_feedforward)
        self.linear2 = Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.act = nn.ReLU()

    def forward(
        self, tgt: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor, num_obj_ptr_tokens: int = 0
    ) -> torch.Tensor:
        x = self.norm1(tgt)
        tgt = tgt + self.dropout(self.self_attn(x, x, x))
        x = self.norm2(tgt)
        tgt = tgt + self.dropout(
            self.cross_attn_image(x, memory + memory_pos, memory, num_k_exclude_rope=num_obj_ptr_tokens)
        )
        x = self.norm3(tgt)
        return tgt + self.dropout(self.linear2(self.dropout(self.act(self.linear1(x)))))


class MemoryAttention(nn.Module):
    """Stack of memory-attention layers, batch-first.

    curr: (B, HW, 256) current features, curr_pos: their encoding (added once, scaled by 0.1);
    memory: (B, M, 64) spatial memories then `num_obj_ptr_tokens` pointer tokens; memory_pos alike.
    """

    def __init__(self, d_model: int = 256, mem_dim: int = 64, num_layers: int = 4) -> None:
        super().__init__()
        self.layers = nn.ModuleList(MemoryAttentionLayer(d_model, mem_dim) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self,
        curr: torch.Tensor,
        curr_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        num_obj_ptr_tokens: int = 0,
    ) -> torch.Tensor:
        x = curr + 0.1 * curr_pos
        for layer in self.layers:
            x = layer(x, memory, memory_pos, num_obj_ptr_tokens)
        return self.norm(x)
