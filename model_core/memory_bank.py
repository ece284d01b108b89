"""Per-object memory: what each past frame left behind, and which of it a new frame attends to."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from .configs import ModelConfig
from .modeling.sam2_model import SAM2Model

T = TypeVar("T")


@dataclass
class MemoryEntry:
    """One object's output on one frame, as later frames need it."""

    maskmem: torch.Tensor | None  # (64, s, s) in the run dtype; None until the memory encoder has run
    obj_ptr: torch.Tensor  # (256,)
    object_score_logit: torch.Tensor  # (1,) > 0 means the object is present
    low_res: torch.Tensor | None = None  # (1, 4s, 4s) float32 logits, for corrections on this frame

    @property
    def score(self) -> torch.Tensor:
        """Old name of `object_score_logit`, kept for callers written against it."""
        return self.object_score_logit


@dataclass
class ObjectTrack:
    """An object's conditioning frames (prompted) and non-conditioning frames (tracked), by frame index."""

    obj_id: int
    cond: dict[int, MemoryEntry] = field(default_factory=dict)
    non_cond: dict[int, MemoryEntry] = field(default_factory=dict)

    def entry(self, frame: int) -> MemoryEntry | None:
        return self.cond.get(frame) or self.non_cond.get(frame)


@dataclass
class MemorySelection:
    """The memories one object attends to on one frame."""

    spatial: list[tuple[int, MemoryEntry]]  # (index into maskmem_tpos_enc, entry)
    pointers: list[tuple[int, MemoryEntry]]  # (signed frame offset, entry)
    max_ptrs: int

    @property
    def layout(self) -> tuple[int, int]:
        """Objects with equal layouts can share one memory-attention call."""
        return len(self.spatial), len(self.pointers)


def group_by_layout(items: Iterable[tuple[T, MemorySelection]]) -> list[tuple[list[T], list[MemorySelection]]]:
    """Split (item, selection) pairs into batches whose selections share one layout, in first-seen order."""
    groups: dict[tuple[int, int], list[tuple[T, MemorySelection]]] = defaultdict(list)
    for item, sel in items:
        groups[sel.layout].append((item, sel))
    return [([i for i, _ in members], [s for _, s in members]) for members in groups.values()]


def closest_cond_frames(frame: int, cond: dict[int, MemoryEntry], limit: int) -> tuple[dict, dict]:
    """All conditioning frames, or the `limit` closest (always the nearest before and after)."""
    if limit == -1 or len(cond) <= limit:
        return dict(cond), {}
    chosen: dict[int, MemoryEntry] = {}
    before = [t for t in cond if t < frame]
    after = [t for t in cond if t >= frame]
    if before:
        chosen[max(before)] = cond[max(before)]
    if after:
        chosen[min(after)] = cond[min(after)]
    rest = sorted((t for t in cond if t not in chosen), key=lambda t: abs(t - frame))
    for t in rest[: limit - len(chosen)]:
        chosen[t] = cond[t]
    return chosen, {t: e for t, e in cond.items() if t not in chosen}


def select_memories(
    track: ObjectTrack, frame: int, reverse: bool, num_frames: int | None, cfg: ModelConfig
) -> MemorySelection:
    """SAM 2's choice: conditioning frames, the previous num_maskmem - 1 frames, pointers of up to 16 frames."""
    step = -1 if reverse else 1
    chosen, unchosen = closest_cond_frames(frame, track.cond, cfg.max_cond_frames_in_attn)
    n = cfg.num_maskmem
    spatial = [(n - 1, e) for _, e in sorted(chosen.items()) if e.maskmem is not None]
    for back in range(n - 1, 0, -1):  # oldest first; `back` frames before this one
        prev = frame - step * back
        e = track.non_cond.get(prev) or unchosen.get(prev)
        if e is not None and e.maskmem is not None:
            spatial.append((back - 1, e))

    max_ptrs = min(num_frames, cfg.max_obj_ptrs_in_encoder) if num_frames else cfg.max_obj_ptrs_in_encoder
    pointers = []
    for t, e in sorted(chosen.items()):
        if (t >= frame) if reverse else (t <= frame):
            offset = (frame - t) * step if cfg.use_signed_tpos_enc_to_obj_ptrs else abs(frame - t)
            pointers.append((offset, e))
    for back in range(1, max_ptrs):
        t = frame - step * back
        outside = t < 0 or (num_frames is not None and t >= num_frames)
        if outside:
            break
        e = track.non_cond.get(t) or unchosen.get(t)
        if e is not None:
            pointers.append((back, e))
    return MemorySelection(spatial, pointers, max_ptrs)


def sine_1d(pos: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Transformer sine encoding of scalar positions: (P,) -> (P, dim), sines then cosines."""
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=pos.device)
    freqs = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / half)
    angles = pos.float()[:, None] / freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def pointer_tokens(
    model: SAM2Model, ptrs: torch.Tensor, positions: list[int], max_ptrs: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Object pointers (B, P, 256) at signed frame offsets -> tokens and encodings (B, 4P, 64).

    Each 256-d pointer is split into 256 / mem_dim tokens that share its temporal encoding.
    """
    cfg = model.cfg
    b, p, c = ptrs.shape
    mem = cfg.mem_dim
    if cfg.add_tpos_enc_to_obj_ptrs:
        t = torch.tensor(positions, device=ptrs.device, dtype=torch.float32) / max(max_ptrs - 1, 1)
        pos = model.obj_ptr_tpos_proj(sine_1d(t, c if cfg.proj_tpos_enc_in_obj_ptrs else mem))  # (P, mem)
        pos = pos.to(ptrs.dtype)[None].expand(b, -1, -1)
    else:
        pos = ptrs.new_zeros(b, p, mem)
    split = c // mem
    tokens = ptrs.reshape(b, p * split, mem)
    return tokens, pos.repeat_interleave(split, dim=1)


def memory_pos_enc(model: SAM2Model, device: torch.device) -> torch.Tensor:
    """The memories' spatial encoding, the same for every frame: (1, 64, s, s)."""
    s = model.cfg.embedding_size
    return model.memory_encoder.position_encoding(torch.zeros(1, model.cfg.mem_dim, s, s, device=device))


def assemble_memory(
    model: SAM2Model, selections: list[MemorySelection], pos_enc: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Stack the selections of B objects (equal layouts) into memory tokens (B, M, 64), encodings, #pointer tokens.

    pos_enc: the memories' spatial encoding (1, 64, s, s).
    """
    spatial_pos = pos_enc.flatten(2).transpose(1, 2)[0]  # (HW, 64)
    tpos = model.maskmem_tpos_enc.reshape(model.cfg.num_maskmem, -1)  # (n, 64)
    mems, poss = [], []
    for sel in selections:
        feats = [e.maskmem.flatten(1).transpose(0, 1) for _, e in sel.spatial]  # each (HW, 64)
        enc = [(spatial_pos + tpos[i]).to(feats[0].dtype if feats else spatial_pos.dtype) for i, _ in sel.spatial]
        mems.append(torch.cat(feats) if feats else spatial_pos.new_zeros(0, spatial_pos.shape[1]))
        poss.append(torch.cat(enc) if enc else spatial_pos.new_zeros(0, spatial_pos.shape[1]))
    memory, memory_pos = torch.stack(mems), torch.stack(poss)
    n_ptr_tokens = 0
    if selections[0].pointers:
        ptrs = torch.stack([torch.stack([e.obj_ptr for _, e in sel.pointers]) for sel in selections])  # (B, P, 256)
        offsets = [o for o, _ in selections[0].pointers]
        if any([o for o, _ in sel.pointers] != offsets for sel in selections):
            # offsets differ between objects: encode per object
            toks, tpos_list = zip(*(pointer_tokens(model, p[None], [o for o, _ in s.pointers], s.max_ptrs)
                                    for p, s in zip(ptrs, selections)))
            tokens, ptr_pos = torch.cat(toks), torch.cat(tpos_list)
        else:
            tokens, ptr_pos = pointer_tokens(model, ptrs, offsets, selections[0].max_ptrs)
        memory = torch.cat([memory, tokens.to(memory.dtype)], dim=1)
        memory_pos = torch.cat([memory_pos, ptr_pos.to(memory_pos.dtype)], dim=1)
        n_ptr_tokens = tokens.shape[1]
    return memory, memory_pos, n_ptr_tokens
