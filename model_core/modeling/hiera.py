"""Hiera trunk: a hierarchical ViT with windowed/global attention and query pooling between stages."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import HieraConfig
from .conv import Conv2d
from .layers import MLP
from .linear import Linear


def _pool_bhwc(x: torch.Tensor, pool: nn.Module | None) -> torch.Tensor:
    """Apply a 2-D pooling module to a channels-last (B, H, W, C) map."""
    if pool is None:
        return x
    return pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def to_windows(x: torch.Tensor, ws: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * nWin, ws, ws, C), zero-padding H and W up to multiples of ws."""
    b, h, w, c = x.shape
    ph, pw = -h % ws, -w % ws
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    hp, wp = h + ph, w + pw
    x = x.reshape(b, hp // ws, ws, wp // ws, ws, c).transpose(2, 3)
    return x.reshape(-1, ws, ws, c), (hp, wp)


def from_windows(x: torch.Tensor, ws: int, padded_hw: tuple[int, int], hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of `to_windows`: (B * nWin, ws, ws, C) -> (B, H, W, C) with the padding cropped."""
    hp, wp = padded_hw
    h, w = hw
    b = x.shape[0] // ((hp // ws) * (wp // ws))
    x = x.reshape(b, hp // ws, wp // ws, ws, ws, -1).transpose(2, 3).reshape(b, hp, wp, -1)
    return x[:, :h, :w, :].contiguous() if (hp, wp) != (h, w) else x


class PatchEmbed(nn.Module):
    """7x7 stride-4 convolution from RGB to tokens, returned channels-last."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.proj = Conv2d(3, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).permute(0, 2, 3, 1)  # (B, H/4, W/4, C)


class MultiScaleAttention(nn.Module):
    """Multi-head self-attention whose queries may be max-pooled (halving the map)."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_pool: nn.Module | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_pool = q_pool
        self.qkv = Linear(dim, dim_out * 3)
        self.proj = Linear(dim_out, dim_out)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = tokens.shape
        q, k, v = self.qkv(tokens).reshape(b, h * w, 3, self.num_heads, -1).unbind(2)  # each (B, HW, nH, d)
        if self.q_pool is not None:
            q = _pool_bhwc(q.reshape(b, h, w, -1), self.q_pool)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block; the first block of a stage pools and widens the map."""

    def __init__(
        self, dim: int, dim_out: int, num_heads: int, q_stride: tuple[int, int] | None, window_size: int
    ) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.pool = nn.MaxPool2d(kernel_size=q_stride, stride=q_stride) if q_stride else None
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_pool=self.pool)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, 4 * dim_out, dim_out, num_layers=2, activation=nn.GELU)
        if dim != dim_out:
            self.proj = Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = _pool_bhwc(self.proj(x), self.pool)
        ws = self.window_size
        if ws > 0:
            x, _ = to_windows(x, ws)
        x = self.attn(x)
        if ws > 0:
            # pooled queries shrink each window; undo the partition at the output resolution
            if self.q_stride:
                ws = ws // self.q_stride[0]
            h, w = shortcut.shape[1:3]
            x = from_windows(x, ws, (h + (-h % ws), w + (-w % ws)), (h, w))
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Hiera(nn.Module):
    """Image -> four feature maps at strides 4, 8, 16, 32 (finest first), each (B, C_i, H_i, W_i)."""

    def __init__(self, cfg: HieraConfig) -> None:
        super().__init__()
        self.cfg = cfg
        depth = sum(cfg.stages)
        self.stage_ends = [sum(cfg.stages[: i + 1]) - 1 for i in range(len(cfg.stages))]
        pool_blocks = {end + 1 for end in self.stage_ends[:-1][: cfg.q_pool]}

        self.patch_embed = PatchEmbed(cfg.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.embed_dim, *cfg.window_pos_embed_bkg_spatial_size))
        w0 = cfg.window_spec[0]
        self.pos_embed_window = nn.Parameter(torch.zeros(1, cfg.embed_dim, w0, w0))
        self._pos_cache: tuple[tuple, torch.Tensor] | None = None  # (size and weights' identity, embedding)

        self.blocks = nn.ModuleList()
        dim, heads, stage = cfg.embed_dim, cfg.num_heads, 0
        for i in range(depth):
            # the block that opens a stage still uses the previous stage's window size
            window = 0 if i in cfg.global_att_blocks else cfg.window_spec[stage]
            dim_out = dim
            if i - 1 in self.stage_ends:
                dim_out, heads, stage = int(dim * cfg.dim_mul), int(heads * cfg.head_mul), stage + 1
            q_stride = cfg.q_stride if i in pool_blocks else None
            self.blocks.append(MultiScaleBlock(dim, dim_out, heads, q_stride, window))
            dim = dim_out

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        """Background embedding interpolated to (h, w) plus the window embedding tiled over it: (1, h, w, C).

        A function of the weights and the size only, so it is kept until either changes: the bicubic resize
        alone is ~2% of a CPU forward pass. (Compiled: computed in the graph, since a cache would be a guard.)
        """
        bg, win = self.pos_embed, self.pos_embed_window
        cache = not torch.compiler.is_compiling() and not torch.is_grad_enabled()
        if cache:
            device = bg.device.type
            amp = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
            key = (h, w, amp, bg.data_ptr(), bg._version, win.data_ptr(), win._version)
            if self._pos_cache is not None and self._pos_cache[0] == key:
                return self._pos_cache[1]
        grid = F.interpolate(bg, size=(h, w), mode="bicubic")
        reps = (h // win.shape[-2], w // win.shape[-1])
        pos = (grid + win.tile(1, 1, *reps)).permute(0, 2, 3, 1)
        if cache:
            self._pos_cache = (key, pos)
        return pos

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        x = x + self._pos_embed(*x.shape[1:3])
        outs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outs.append(x.permute(0, 3, 1, 2))
        return outs
