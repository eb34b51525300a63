"""The Swin Transformer V1/V2 family's spec (torch-free): its config and its registered
variants. The model is :mod:`convergent.backbones.swin`."""

from dataclasses import dataclass
from typing import ClassVar

from convergent.backbones.families import register_backbone, register_family


@register_family
@dataclass
class SwinConfig:
    """Swin Transformer V1 (``version=1``) or V2 (``version=2``: res-post-norm, scaled cosine
    attention, log-spaced continuous position bias)."""

    family: ClassVar[str] = "swin"
    modality: ClassVar[str] = "image"
    builder: ClassVar[str] = "convergent.backbones.swin:SwinTransformer"
    converter: ClassVar[str | None] = "convergent.converters.hf_swin"

    version: int = 2
    """1: Swin (Liu et al., 2021); 2: Swin V2 (Liu et al., 2022)."""
    img_size: int = 224
    """Input resolution the windows and shift masks are laid out for."""
    patch_size: int = 4
    """Patch side in pixels."""
    in_chans: int = 3
    """Input channels."""
    embed_dim: int = 96
    """Width of the first stage; doubles at each stage."""
    depths: tuple[int, ...] = (2, 2, 6, 2)
    """Blocks per stage."""
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    """Attention heads per stage."""
    window_size: int = 7
    """Attention window side in tokens (clamped to a stage's resolution when larger)."""
    pretrained_window_sizes: tuple[int, ...] = (0, 0, 0, 0)
    """V2 only: per-stage window size the continuous bias was pre-trained at (0: none)."""
    mlp_ratio: float = 4.0
    """Feed-forward width as a multiple of the stage width."""
    qkv_bias: bool = True
    """Learn q/v (V2) or q/k/v (V1) biases."""
    dropout: float = 0.0
    """Dropout on embeddings and residual branches."""
    attn_dropout: float = 0.0
    """Dropout on attention probabilities."""
    drop_path: float = 0.1
    """Stochastic depth rate, increased linearly to this value over all blocks."""
    ape: bool = False
    """Add a learned absolute position embedding after the patch embedding."""
    patch_norm: bool = True
    """LayerNorm after the patch embedding."""
    norm_eps: float = 1e-5
    """LayerNorm epsilon."""
    act: str = "gelu"
    """Feed-forward activation."""

    def __post_init__(self):
        self.depths = tuple(self.depths)
        self.num_heads = tuple(self.num_heads)
        self.pretrained_window_sizes = tuple(self.pretrained_window_sizes)
        if len(self.depths) != len(self.num_heads):
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} differ in length")
        if len(self.pretrained_window_sizes) != len(self.depths):
            if any(self.pretrained_window_sizes):
                raise ValueError(
                    f"pretrained_window_sizes {self.pretrained_window_sizes} needs one entry per stage "
                    f"({len(self.depths)})"
                )
            self.pretrained_window_sizes = (0,) * len(self.depths)
        if self.version not in (1, 2):
            raise ValueError(f"Swin version must be 1 or 2, got {self.version}")

    @property
    def num_blocks(self) -> int:
        """Blocks over all stages (the indices of ``forward_intermediates``)."""
        return sum(self.depths)


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


@register_backbone("swinv2_nano")
def swinv2_nano() -> SwinConfig:
    """The smallest of the 32-px Swin V2 ladder (nano, micro, mini; ~0.6 M, 2.2 M, 5.4 M parameters,
    head width 16 throughout), for scaling sweeps on a CPU: width 32, 2 blocks per stage."""
    return SwinConfig(
        version=2, img_size=32, patch_size=2, embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 8), window_size=4
    )


@register_backbone("swinv2_mini")
def swinv2_mini() -> SwinConfig:
    """The largest of the 32-px Swin V2 ladder (between micro and tiny): width 64, 6 blocks in the last stage."""
    return SwinConfig(
        version=2, img_size=32, patch_size=2, embed_dim=64, depths=(2, 2, 6), num_heads=(4, 8, 16), window_size=4
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
