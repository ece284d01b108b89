"""Frozen configurations of the eight SAM 2 / SAM 2.1 models, and the names users call them by."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class HieraConfig:
    """The Hiera trunk: widths, depths and where attention is windowed or global."""

    embed_dim: int = 96
    num_heads: int = 1
    stages: tuple[int, ...] = (2, 3, 16, 3)
    global_att_blocks: tuple[int, ...] = (12, 16, 20)
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14)
    q_pool: int = 3
    q_stride: tuple[int, int] = (2, 2)
    dim_mul: float = 2.0
    head_mul: float = 2.0

    @property
    def channel_list(self) -> tuple[int, ...]:
        """Output channels of each stage, deepest first (the FPN neck's input order)."""
        return tuple(self.embed_dim * 2**i for i in range(len(self.stages)))[::-1]


@dataclass(frozen=True)
class ModelConfig:
    """Everything that decides a SAM 2 model's parameters and behaviour."""

    name: str
    hiera: HieraConfig
    image_size: int = 1024
    backbone_stride: int = 16
    d_model: int = 256
    mem_dim: int = 64
    num_maskmem: int = 7
    memory_attention_layers: int = 4
    # SAM 2.1 additions over SAM 2.0
    no_obj_embed_spatial: bool = True
    add_tpos_enc_to_obj_ptrs: bool = True
    proj_tpos_enc_in_obj_ptrs: bool = True
    use_signed_tpos_enc_to_obj_ptrs: bool = True
    # behaviour shared by every released checkpoint
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    max_obj_ptrs_in_encoder: int = 16
    max_cond_frames_in_attn: int = -1
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98

    @property
    def embedding_size(self) -> int:
        """Side of the square image embedding (64 at 1024 px)."""
        return self.image_size // self.backbone_stride

    @property
    def feat_sizes(self) -> tuple[tuple[int, int], ...]:
        """Spatial sizes of the three FPN levels the decoder sees, finest first."""
        s = self.embedding_size
        return ((4 * s, 4 * s), (2 * s, 2 * s), (s, s))

    @property
    def version(self) -> str:
        return "2.1" if self.no_obj_embed_spatial else "2.0"

    def with_image_size(self, image_size: int | None) -> "ModelConfig":
        """Same weights at another input resolution (a multiple of 32, e.g. 512 for speed)."""
        if image_size is None or image_size == self.image_size:
            return self
        if image_size <= 0 or image_size % 32:
            raise ValueError(f"image_size must be a positive multiple of 32, got {image_size}")
        return replace(self, image_size=image_size)


_HIERA = {
    "tiny": HieraConfig(
        embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9),
        window_pos_embed_bkg_spatial_size=(7, 7),
    ),
    "small": HieraConfig(
        embed_dim=96, num_heads=1, stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13),
        window_pos_embed_bkg_spatial_size=(7, 7),
    ),
    "base_plus": HieraConfig(embed_dim=112, num_heads=2),
    "large": HieraConfig(
        embed_dim=144, num_heads=2, stages=(2, 6, 36, 4), global_att_blocks=(23, 33, 43),
        window_spec=(8, 4, 16, 8), window_pos_embed_bkg_spatial_size=(7, 7),
    ),
}

_SIZE_ALIASES = {"t": "tiny", "s": "small", "b": "base_plus", "b+": "base_plus", "l": "large"}

_SAM20_FLAGS = dict(
    no_obj_embed_spatial=False,
    add_tpos_enc_to_obj_ptrs=False,
    proj_tpos_enc_in_obj_ptrs=False,
    use_signed_tpos_enc_to_obj_ptrs=False,
)


def _make_configs() -> dict[str, ModelConfig]:
    configs = {}
    for size, hiera in _HIERA.items():
        configs[f"sam2.1_hiera_{size}"] = ModelConfig(name=f"sam2.1_hiera_{size}", hiera=hiera)
        configs[f"sam2_hiera_{size}"] = ModelConfig(name=f"sam2_hiera_{size}", hiera=hiera, **_SAM20_FLAGS)
    return configs


CONFIGS: dict[str, ModelConfig] = _make_configs()
"""The eight released models under Meta's checkpoint names (e.g. ``sam2.1_hiera_tiny``)."""

CHECKPOINT_URLS: dict[str, str] = {
    **{
        f"sam2.1_hiera_{s}": f"https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_{s}.pt"
        for s in _HIERA
    },
    **{
        f"sam2_hiera_{s}": f"https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_{s}.pt"
        for s in _HIERA
    },
}


def canonical_name(name: str) -> str:
    """Map any accepted model name to Meta's checkpoint name.

    Accepts ``sam2.1_t|s|b|l``, ``sam2_t|s|b|l`` (Ultralytics' names, with or without ``.pt``),
    ``sam2.1_hiera_tiny`` / ``sam2_hiera_b+`` (Meta's names and config names).
    """
    key = name.strip().lower()
    for suffix in (".pt", ".yaml"):
        key = key.removesuffix(suffix)
    key = key.replace("-", "_")
    if key in CONFIGS:
        return key
    for prefix in ("sam2.1", "sam2"):
        for sep in ("_hiera_", "_"):
            if key.startswith(prefix + sep):
                size = key[len(prefix + sep):]
                size = _SIZE_ALIASES.get(size, size)
                if size in _HIERA:
                    return f"{prefix}_hiera_{size}"
    known = ", ".join(["sam2.1_t|s|b|l", "sam2_t|s|b|l", *sorted(CONFIGS)])
    raise ValueError(f"unknown model name {name!r}; known names: {known}")


def get_config(name: str, image_size: int | None = None) -> ModelConfig:
    """The frozen config for a model name, optionally at a lower input resolution."""
    return CONFIGS[canonical_name(name)].with_image_size(image_size)
