"""torch.compile for the networks the service calls on every request, with bounded recompiles.

The image encoder and the memory encoder see static shapes: encoder batches are padded up to a bucket
(1, 2, 4, 8, ...) so that at most one graph per bucket is ever built. The mask decoder and the memory
attention see varying point counts and memory lengths; they are compiled with automatic dynamic shapes
(one recompile marks the varying dimension dynamic instead of a graph per length). "reduce-overhead"
adds CUDA graphs where a graph's shapes repeat (a tracking session's steady state); their outputs are copied
out, since the next replay reuses the buffers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .modeling.image_encoder import BackboneOutput
from .modeling.sam2_model import SAM2Model

MODES = ("off", "default", "max-autotune", "reduce-overhead")


@dataclass(frozen=True)
class CompileConfig:
    """How to compile: torch.compile's mode, and the encoder batch sizes graphs are built for."""

    mode: str = "default"
    buckets: tuple[int, ...] = (1, 2, 4, 8)
    backend: str = "inductor"  # torch.compile's; "aot_eager" traces the same graphs without generating code

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"compile mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if not self.buckets or list(self.buckets) != sorted(set(self.buckets)) or self.buckets[0] < 1:
            raise ValueError("buckets must be increasing positive batch sizes")


def bucket_for(n: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket holding n images; past the largest, multiples of it."""
    for b in buckets:
        if n <= b:
            return b
    top = buckets[-1]
    return -(-n // top) * top


def pad_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, ...) -> (size, ...), zero rows appended (rows are computed independently)."""
    extra = size - x.shape[0]
    return x if extra == 0 else torch.cat([x, x.new_zeros((extra, *x.shape[1:]))])


def owned_outputs(fn):
    """`fn` with its tensor outputs copied out (in lists, tuples and dataclasses too).

    Under CUDA graphs ("reduce-overhead") a graph's outputs live in buffers that its next replay overwrites,
    while callers keep them: features in the embedding cache, memories and object pointers in the bank."""

    def copied(value):
        if isinstance(value, torch.Tensor):
            return value.clone()
        if isinstance(value, (list, tuple)):
            return type(value)(copied(v) for v in value)
        if dataclasses.is_dataclass(value):
            return dataclasses.replace(value, **{f.name: copied(getattr(value, f.name))
                                                 for f in dataclasses.fields(value)})
        return value

    return lambda *args, **kwargs: copied(fn(*args, **kwargs))


def compile_model(model: SAM2Model, cfg: CompileConfig) -> SAM2Model:
    """Compile `model`'s image encoder, memory encoder, memory attention and mask decoder in place.

    Graphs are built lazily, on first use of each shape: call a warm-up before taking traffic."""
    if cfg.mode == "off":
        return model
    # the decoder has a few static variants (multimask or not, one image for all objects or one each, fp16 or
    # not) beside its dynamic sizes: more than torch's default limit of 8 graphs per function
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
    opts = dict(backend=cfg.backend, mode=None if cfg.mode == "default" or cfg.backend != "inductor" else cfg.mode)

    def compiled(fn, dynamic: bool | None):
        graph = torch.compile(fn, dynamic=dynamic, **opts)
        return owned_outputs(graph) if cfg.mode == "reduce-overhead" and cfg.backend == "inductor" else graph

    image_encoder = compiled(model.image_encoder.forward, dynamic=False)
    memory_encoder = compiled(model.memory_encoder.forward, dynamic=False)

    def encode_images(images: torch.Tensor) -> BackboneOutput:
        n = images.shape[0]  # (B, 3, S, S) -> a bucket of images, then the B real ones' features
        out = image_encoder(pad_batch(images, bucket_for(n, cfg.buckets)))
        return BackboneOutput([f[:n] for f in out.backbone_fpn], [p[:n] for p in out.vision_pos_enc])

    def encode_memory(pix_feat: torch.Tensor, masks: torch.Tensor, skip_mask_sigmoid: bool = False):
        n, size = pix_feat.shape[0], bucket_for(pix_feat.shape[0], cfg.buckets)  # B objects -> a bucket
        mem, pos = memory_encoder(pad_batch(pix_feat, size), pad_batch(masks, size), skip_mask_sigmoid)
        return mem[:n], pos[:n]

    model.image_encoder.forward = encode_images
    model.memory_encoder.forward = encode_memory
    model.memory_attention.forward = compiled(model.memory_attention.forward, dynamic=None)
    model.sam_mask_decoder.forward = compiled(model.sam_mask_decoder.forward, dynamic=None)
    return model
