"""The Vision Transformer family's spec (torch-free): its config and its registered variants
(ViT sizes, CLIP's image tower). The model is :mod:`convergent.backbones.vit`."""

from dataclasses import dataclass
from typing import ClassVar

from convergent.backbones.families import register_backbone, register_family

VIT_POS_EMBEDS = ("learned", "sincos", "none")
VIT_INITS = ("trunc_normal", "xavier", "xavier_qkv")
VIT_REL_POS_BIASES = ("none", "shared")


@register_family
@dataclass
class ViTConfig:
    """Vision Transformer: class token, absolute positions (learned or fixed sin-cos) and/or BEiT's shared
    relative position bias, pre-norm blocks (optionally with layer scale)."""

    family: ClassVar[str] = "vit"
    modality: ClassVar[str] = "image"
    builder: ClassVar[str] = "convergent.backbones.vit:VisionTransformer"
    converter: ClassVar[str | None] = "convergent.converters.hf_vit"

    img_size: int = 224
    """Input resolution the position embeddings are laid out for."""
    patch_size: int = 16
    """Patch side in pixels."""
    in_chans: int = 3
    """Input channels."""
    embed_dim: int = 768
    """Token width."""
    depth: int = 12
    """Number of Transformer blocks."""
    num_heads: int = 12
    """Attention heads per block."""
    mlp_dim: int = 3072
    """Hidden width of the feed-forward block."""
    qkv_bias: bool = True
    """Learn q, k, v biases."""
    dropout: float = 0.0
    """Dropout on embeddings and residual branches."""
    attn_dropout: float = 0.0
    """Dropout on attention probabilities."""
    drop_path: float = 0.0
    """Stochastic depth rate, increased linearly to this value over the blocks."""
    norm_eps: float = 1e-6
    """LayerNorm epsilon (timm/MAE: 1e-6; HF ViT default: 1e-12)."""
    act: str = "gelu"
    """Feed-forward activation (gelu, gelu_tanh, quick_gelu, relu)."""
    pooler: bool = False
    """Add a dense+tanh pooler over the class token (as HF ViTModel)."""
    pre_norm: bool = False
    """CLIP's layout (timm ``pre_norm``): a LayerNorm on the embedded tokens before the first
    block, and no bias in the patch projection (as CLIP, and timm with ``pre_norm``)."""
    global_pool: str = "cls"
    """How ``pooled`` summarises tokens: 'cls' (class token) or 'avg' (mean of patch tokens), the
    pooling vocabulary of ``convergent.heads.classifier.POOLINGS`` ('token', timm's and earlier
    versions' name for 'cls', is read as 'cls')."""
    pos_embed: str = "learned"
    """Absolute position embeddings: 'learned' (ViT), 'sincos', the fixed 2-D sin-cos table of MoCo
    v3 and MAE (not trained; kept in the state dict under the same key, and recomputed for another
    patch grid instead of interpolated; needs ``embed_dim`` divisible by 4), or 'none' (no absolute
    positions, as BEiT and feature distillation's student, which rely on ``rel_pos_bias``)."""
    rel_pos_bias: str = "none"
    """Relative position bias of the attention logits: 'none', or 'shared' (BEiT's
    ``use_shared_rel_pos_bias``, feature distillation's student): one learned table of per-head
    biases, one entry per relative offset on the patch grid plus class-to-patch, patch-to-class and
    class-to-class, zero-initialised, added to the logits of every block. Not for ``forward_tokens``
    over a sequence the model did not embed (ViLT)."""
    layer_scale: float | None = None
    """Layer scale (CaiT; BEiT's ``init_values``): each residual branch is multiplied by a learned
    per-channel vector initialised to this value (BEiT, feature distillation: 0.1); None: off."""
    freeze_patch_embed: bool = False
    """Keep the patch projection at its random initialisation (no gradient, not in the
    optimizer): MoCo v3's random patch projection ("a trick for improving stability")."""
    init: str = "trunc_normal"
    """Weight initialisation: 'trunc_normal' (timm: linear weights, class token and learned
    positions ~ truncated N(0, 0.02)); 'xavier' (MAE ``models_mae.py``, the JAX ViT's: Xavier-
    uniform linear weights, the fused qkv as one matrix, class token ~ N(0, 0.02)); 'xavier_qkv'
    (MoCo v3 ``vits.py``: as 'xavier' but q, k and v each Xavier-uniform as their own matrix,
    class token ~ N(0, 1e-6)). All: the patch projection Xavier-uniform as a flattened linear
    map, zero biases, LayerNorms at identity, the mask token ~ truncated N(0, 0.02) (SimMIM)."""

    def __post_init__(self):
        if self.global_pool == "token":  # config.json files written before the one pooling vocabulary
            self.global_pool = "cls"
        if self.pos_embed not in VIT_POS_EMBEDS:
            raise ValueError(f"pos_embed must be one of {', '.join(VIT_POS_EMBEDS)}, got {self.pos_embed!r}")
        if self.pos_embed == "sincos" and self.embed_dim % 4:
            raise ValueError(f"pos_embed 'sincos' needs embed_dim divisible by 4, got {self.embed_dim}")
        if self.rel_pos_bias not in VIT_REL_POS_BIASES:
            raise ValueError(f"rel_pos_bias must be one of {', '.join(VIT_REL_POS_BIASES)}, got {self.rel_pos_bias!r}")
        if self.layer_scale is not None and not self.layer_scale > 0:
            raise ValueError(f"layer_scale must be > 0 (or null: off), got {self.layer_scale!r}")
        if self.init not in VIT_INITS:
            raise ValueError(f"init must be one of {', '.join(VIT_INITS)}, got {self.init!r}")
        if not isinstance(self.freeze_patch_embed, bool):
            raise ValueError(f"freeze_patch_embed must be true or false, got {self.freeze_patch_embed!r}")

    @property
    def num_blocks(self) -> int:
        """Transformer blocks (the indices of ``forward_intermediates``)."""
        return self.depth


# --- ViT (Dosovitskiy et al. 2021; tiny/small from DeiT) -------------------------------------


def _vit(embed_dim: int, depth: int, num_heads: int, **kw) -> ViTConfig:
    return ViTConfig(embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_dim=4 * embed_dim, **kw)


@register_backbone("vit_test")
def vit_test() -> ViTConfig:
    return _vit(32, 2, 2, img_size=32, patch_size=8)


@register_backbone("vit_micro")
def vit_micro() -> ViTConfig:
    """Small ViT for 32-px images (e.g. Fashion-MNIST): 8x8 patches of 4 px, width 192, 6 blocks."""
    return _vit(192, 6, 3, img_size=32, patch_size=4)


@register_backbone("vit_tiny_patch16")
def vit_tiny_patch16() -> ViTConfig:
    return _vit(192, 12, 3)


@register_backbone("vit_small_patch16")
def vit_small_patch16() -> ViTConfig:
    return _vit(384, 12, 6)


@register_backbone("vit_base_patch16")
def vit_base_patch16() -> ViTConfig:
    return _vit(768, 12, 12)


@register_backbone("vit_base_patch32")
def vit_base_patch32() -> ViTConfig:
    return _vit(768, 12, 12, patch_size=32)


@register_backbone("vit_large_patch16")
def vit_large_patch16() -> ViTConfig:
    return _vit(1024, 24, 16)


def _vit_clip(embed_dim: int, depth: int, num_heads: int, **kw) -> ViTConfig:
    """CLIP's image tower: a LayerNorm before the blocks, no patch bias, LayerNorm eps 1e-5, quick GELU."""
    return _vit(embed_dim, depth, num_heads, pre_norm=True, norm_eps=1e-5, act="quick_gelu", **kw)


@register_backbone("vit_clip_test")
def vit_clip_test() -> ViTConfig:
    return _vit_clip(32, 2, 2, img_size=32, patch_size=8)


@register_backbone("vit_base_patch32_clip")
def vit_base_patch32_clip() -> ViTConfig:
    """CLIP ViT-B/32 at 224 px."""
    return _vit_clip(768, 12, 12, patch_size=32)


@register_backbone("vit_base_patch16_clip")
def vit_base_patch16_clip() -> ViTConfig:
    """CLIP ViT-B/16 at 224 px."""
    return _vit_clip(768, 12, 12)
