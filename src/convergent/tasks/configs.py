"""Typed task configurations (torch-free)."""

from dataclasses import dataclass


@dataclass
class SimMIMConfig:
    """SimMIM (Xie et al., 2022): mask random ``mask_patch_size`` squares, replace their patch
    embeddings by a learned mask token, predict raw pixels with a linear head, L1 on masked
    pixels only."""

    mask_patch_size: int = 32
    """Side of a masked square in pixels (paper: 32 at 192 px); a multiple of the model's patch size."""
    mask_ratio: float = 0.6
    """Fraction of squares masked."""
    encoder_stride: int | None = None
    """Output stride of the encoder (pixels per output token); None: derived from the backbone."""


@dataclass
class MAEConfig:
    """MAE (He et al., 2022): encode the visible patches only, decode all positions with a
    light Transformer, MSE on the masked patches."""

    mask_ratio: float = 0.75
    """Fraction of patches hidden from the encoder."""
    decoder_dim: int = 512
    """Decoder width."""
    decoder_depth: int = 8
    """Decoder blocks."""
    decoder_heads: int = 16
    """Decoder attention heads."""
    norm_pix_loss: bool = True
    """Regress per-patch normalised pixels (mean/var of each target patch), as the paper's best setting."""


@dataclass
class ClassifyConfig:
    """Supervised classification (fine-tuning, as MAE / SimMIM / BEiT): pool the backbone's
    final tokens, dropout + linear head, cross-entropy with label smoothing."""

    num_classes: int = 1000
    """Number of classes (1000: ImageNet-1K; set it to your dataset's)."""
    label_smoothing: float = 0.1
    """Label smoothing of the cross-entropy (MAE / SimMIM fine-tuning: 0.1)."""
    pooling: str = "avg"
    """How tokens become one vector: 'avg' (mean of patch tokens, MAE fine-tuning), 'cls' (class
    token; ViT only), 'default' (the backbone's ``pooled``)."""
    head_dropout: float = 0.0
    """Dropout before the linear head."""
    head_init_std: float = 2e-5
    """Std of the head's truncated-normal weight init (MAE: 2e-5), so initial logits are ~0."""
