"""Registered backbone variants: the papers' dimensions, plus test-size ones.

Each variant is a thin function returning a config; override any field when building,
e.g. ``build_backbone("swinv2_tiny", img_size=192, window_size=6)``.
"""

from convergent.backbones.configs import SwinConfig, TextConfig, ViTConfig
from convergent.backbones.registry import register_backbone

# --- text Transformer (BERT, Devlin et al. 2019; small sizes from Turc et al. 2019) ----------


def _text(embed_dim: int, depth: int, num_heads: int, **kw) -> TextConfig:
    return TextConfig(embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_dim=4 * embed_dim, **kw)


@register_backbone("text_test")
def text_test() -> TextConfig:
    return _text(32, 2, 2, vocab_size=1000, max_position=64)


@register_backbone("bert_tiny")
def bert_tiny() -> TextConfig:
    return _text(128, 2, 2)


@register_backbone("bert_mini")
def bert_mini() -> TextConfig:
    return _text(256, 4, 4)


@register_backbone("bert_small")
def bert_small() -> TextConfig:
    return _text(512, 4, 8)


@register_backbone("bert_base")
def bert_base() -> TextConfig:
    return _text(768, 12, 12)


@register_backbone("bert_large")
def bert_large() -> TextConfig:
    return _text(1024, 24, 16)


# --- CLIP's text tower (Radford et al. 2021): GPT-2 layout, causal, EOS-token pooling ---------


def _clip_text(embed_dim: int, depth: int, num_heads: int, **kw) -> TextConfig:
    """OpenAI CLIP's text Transformer: pre-norm, causal, no token types, no dropout, quick GELU."""
    return _text(
        embed_dim, depth, num_heads, type_vocab_size=0, dropout=0.0, attn_dropout=0.0, norm_eps=1e-5,
        act="quick_gelu", causal=True, pre_norm=True, **kw,
    )  # fmt: skip


@register_backbone("clip_text_test")
def clip_text_test() -> TextConfig:
    return _clip_text(32, 2, 2, vocab_size=1000, max_position=64)


@register_backbone("clip_text_base")
def clip_text_base() -> TextConfig:
    """The text tower of every OpenAI CLIP up to ViT-B: 512 wide, 12 blocks, 8 heads, the
    49408-token BPE vocabulary, context 77."""
    return _clip_text(512, 12, 8, vocab_size=49408, max_position=77)


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


# --- Swin V1 (Liu et al. 2021) and V2 (Liu et al. 2022) --------------------------------------

_SWIN_SIZES = {
    "tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "small": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "base": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    "large": dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
}


def _swin(size: str) -> SwinConfig:
    """Swin V1 at the paper's ImageNet-1K setting: 224 px, window 7."""
    return SwinConfig(version=1, img_size=224, window_size=7, **_SWIN_SIZES[size])


def _swinv2(size: str) -> SwinConfig:
    """Swin V2 at the paper's ImageNet-1K setting: 256 px, window 8."""
    return SwinConfig(version=2, img_size=256, window_size=8, **_SWIN_SIZES[size])


@register_backbone("swin_test")
def swin_test() -> SwinConfig:
    return SwinConfig(version=1, img_size=32, embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=4)


@register_backbone("swinv2_test")
def swinv2_test() -> SwinConfig:
    return SwinConfig(version=2, img_size=32, embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=4)


@register_backbone("swinv2_micro")
def swinv2_micro() -> SwinConfig:
    """Small Swin V2 for 32-px images (e.g. Fashion-MNIST): 2-px patches, grids 16/8/4, window 4."""
    return SwinConfig(
        version=2, img_size=32, patch_size=2, embed_dim=48, depths=(2, 2, 4), num_heads=(3, 6, 12), window_size=4
    )


@register_backbone("swin_tiny")
def swin_tiny() -> SwinConfig:
    return _swin("tiny")


@register_backbone("swin_small")
def swin_small() -> SwinConfig:
    return _swin("small")


@register_backbone("swin_base")
def swin_base() -> SwinConfig:
    return _swin("base")


@register_backbone("swin_large")
def swin_large() -> SwinConfig:
    return _swin("large")


@register_backbone("swinv2_tiny")
def swinv2_tiny() -> SwinConfig:
    return _swinv2("tiny")


@register_backbone("swinv2_small")
def swinv2_small() -> SwinConfig:
    return _swinv2("small")


@register_backbone("swinv2_base")
def swinv2_base() -> SwinConfig:
    return _swinv2("base")


@register_backbone("swinv2_large")
def swinv2_large() -> SwinConfig:
    return _swinv2("large")
