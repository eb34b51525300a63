"""The ConvNeXt (V1) family's spec (torch-free): its config and its registered variants. The
model is :mod:`convergent.backbones.convnext`."""

from dataclasses import dataclass
from typing import ClassVar

from convergent.backbones.families import register_backbone, register_family


@register_family
@dataclass
class ConvNeXtConfig:
    """ConvNeXt (Liu et al., 2022, "A ConvNet for the 2020s"): a patchify stem, stages of
    7×7 depthwise-convolution blocks with an inverted-bottleneck MLP and layer scale, 2×2
    strided downsampling between stages."""

    family: ClassVar[str] = "convnext"
    modality: ClassVar[str] = "image"
    builder: ClassVar[str] = "convergent.backbones.convnext:ConvNeXt"
    converter: ClassVar[str | None] = "convergent.converters.hf_convnext"

    img_size: int = 224
    """Resolution the model is described at (any multiple of the output stride works: a
    convnet has no position tables)."""
    in_chans: int = 3
    """Input channels."""
    patch_size: int = 4
    """Stem kernel and stride in pixels (the patchify stem; one mask-grid cell)."""
    depths: tuple[int, ...] = (3, 3, 9, 3)
    """Blocks per stage."""
    dims: tuple[int, ...] = (96, 192, 384, 768)
    """Channels per stage."""
    drop_path: float = 0.1
    """Stochastic depth rate, increased linearly to this value over all blocks."""
    layer_scale_init: float = 1e-6
    """Initial value of the per-channel layer scale on each block's branch (0: no layer scale)."""
    norm_eps: float = 1e-6
    """LayerNorm epsilon of the stem, the blocks and the downsampling layers (HF hard-codes 1e-6)."""
    head_norm_eps: float = 1e-6
    """Epsilon of the LayerNorm after global pooling (official/timm 1e-6; HF's
    ``ConvNextConfig.layer_norm_eps``, 1e-12 in the Facebook checkpoints)."""
    act: str = "gelu"
    """Activation of the pointwise MLP."""
    dropout: float = 0.0
    """Dropout inside the pointwise MLP (ConvNeXt uses none; the protocol's ``dropout``)."""

    def __post_init__(self):
        self.depths = tuple(self.depths)
        self.dims = tuple(self.dims)
        if not self.depths or len(self.depths) != len(self.dims):
            raise ValueError(f"depths {self.depths} and dims {self.dims} must be non-empty and of equal length")
        if min(self.depths) < 1 or min(self.dims) < 1:
            raise ValueError(f"depths {self.depths} and dims {self.dims} must be positive")
        if self.patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {self.patch_size}")
        if self.layer_scale_init < 0:
            raise ValueError(f"layer_scale_init must be >= 0 (0: none), got {self.layer_scale_init}")
        for name, rate in (("drop_path", self.drop_path), ("dropout", self.dropout)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate}")

    @property
    def num_blocks(self) -> int:
        """Blocks over all stages (the indices of ``forward_intermediates``)."""
        return sum(self.depths)


# --- ConvNeXt V1 (Liu et al. 2022), ImageNet-1K at 224 px ----------------------------------------

_CONVNEXT_SIZES = {
    # drop_path: the paper's ImageNet-1K training rates (appendix A.1)
    "tiny": dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), drop_path=0.1),
    "small": dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768), drop_path=0.4),
    "base": dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024), drop_path=0.5),
}


@register_backbone("convnext_test")
def convnext_test() -> ConvNeXtConfig:
    """Tiny, for tests: 32 px, stem 4, two stages (8×8 then 4×4 maps)."""
    return ConvNeXtConfig(img_size=32, depths=(1, 2), dims=(8, 16))


@register_backbone("convnext_micro")
def convnext_micro() -> ConvNeXtConfig:
    """Small ConvNeXt for 32-px images (e.g. Fashion-MNIST), laid out as ``swinv2_micro``: a
    2-px stem and three stages give 16/8/4 maps (output stride 8), so SimMIM's 8-px mask
    squares are whole final tokens; widths 48/96/192, depths 2/2/4."""
    return ConvNeXtConfig(img_size=32, patch_size=2, depths=(2, 2, 4), dims=(48, 96, 192))


@register_backbone("convnext_tiny")
def convnext_tiny() -> ConvNeXtConfig:
    return ConvNeXtConfig(**_CONVNEXT_SIZES["tiny"])


@register_backbone("convnext_small")
def convnext_small() -> ConvNeXtConfig:
    return ConvNeXtConfig(**_CONVNEXT_SIZES["small"])


@register_backbone("convnext_base")
def convnext_base() -> ConvNeXtConfig:
    return ConvNeXtConfig(**_CONVNEXT_SIZES["base"])
