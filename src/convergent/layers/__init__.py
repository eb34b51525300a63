"""Building blocks written once and shared by every backbone."""

from convergent.layers.attention import Attention, CrossAttention, KVCache
from convergent.layers.block import Block
from convergent.layers.drop import DropPath
from convergent.layers.init import init_linear_norm_, init_xavier_linear_norm_
from convergent.layers.linear import Linear
from convergent.layers.mlp import Mlp
from convergent.layers.patch_embed import PatchEmbed, PatchMerging
from convergent.layers.pos_embed import (
    ContinuousPositionBias,
    GridRelativePositionBias,
    RelativePositionBias,
    interpolate_pos_embed,
    interpolate_rel_pos_table,
    sincos_pos_embed_2d,
)
from convergent.layers.unpad import Unpadded
from convergent.layers.window import shift_attn_mask, window_partition, window_reverse

__all__ = [
    "Attention",
    "CrossAttention",
    "KVCache",
    "Block",
    "ContinuousPositionBias",
    "DropPath",
    "GridRelativePositionBias",
    "Linear",
    "Mlp",
    "PatchEmbed",
    "PatchMerging",
    "RelativePositionBias",
    "Unpadded",
    "init_linear_norm_",
    "init_xavier_linear_norm_",
    "interpolate_pos_embed",
    "interpolate_rel_pos_table",
    "shift_attn_mask",
    "sincos_pos_embed_2d",
    "window_partition",
    "window_reverse",
]
