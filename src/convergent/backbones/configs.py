"""Typed backbone configurations. Torch-free, so the CLI can list and validate them cheaply.

Each config names the class that builds it (``builder``, ``"module:Class"``), imported only
when a model is built.
"""

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar


@dataclass
class TextConfig:
    """Text Transformer encoder: BERT layout (post-norm) by default, ``pre_norm=True`` for the
    GPT-2 / CLIP layout; ``causal=True`` for left-to-right attention."""

    family: ClassVar[str] = "text"
    modality: ClassVar[str] = "text"
    builder: ClassVar[str] = "convergent.backbones.text:TextTransformer"

    vocab_size: int = 30522
    """Number of token ids."""
    max_position: int = 512
    """Number of learned absolute positions (maximum sequence length)."""
    type_vocab_size: int = 2
    """Number of token-type (segment) ids; 0 disables token-type embeddings."""
    embed_dim: int = 768
    """Token width."""
    depth: int = 12
    """Number of Transformer blocks."""
    num_heads: int = 12
    """Attention heads per block."""
    mlp_dim: int = 3072
    """Hidden width of the feed-forward block."""
    dropout: float = 0.1
    """Dropout on embeddings and residual branches."""
    attn_dropout: float = 0.1
    """Dropout on attention probabilities."""
    norm_eps: float = 1e-12
    """LayerNorm epsilon (BERT: 1e-12)."""
    act: str = "gelu"
    """Feed-forward activation: gelu, gelu_tanh, quick_gelu (CLIP) or relu."""
    pad_token_id: int = 0
    """Id of the padding token."""
    mask_token_id: int | None = None
    """Id whose word embedding replaces masked positions; None learns a separate mask token."""
    causal: bool = False
    """Causal (left-to-right) attention for language modelling."""
    pooler: bool = False
    """Add BERT's dense+tanh pooler over the first token."""
    pre_norm: bool = False
    """GPT-2 / CLIP layout instead of BERT's: pre-norm blocks, a final LayerNorm after the last
    block, no LayerNorm on the embeddings, and ``pad_token_id`` only marks padding (its word
    embedding trains like any other; CLIP's tokenizer pads with its end-of-text token)."""


@dataclass
class ViTConfig:
    """Vision Transformer: class token, learned absolute positions, pre-norm blocks."""

    family: ClassVar[str] = "vit"
    modality: ClassVar[str] = "image"
    builder: ClassVar[str] = "convergent.backbones.vit:VisionTransformer"

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
    global_pool: str = "token"
    """How ``pooled`` summarises tokens: 'token' (class token) or 'avg' (mean of patch tokens)."""


@dataclass
class SwinConfig:
    """Swin Transformer V1 (``version=1``) or V2 (``version=2``: res-post-norm, scaled cosine
    attention, log-spaced continuous position bias)."""

    family: ClassVar[str] = "swin"
    modality: ClassVar[str] = "image"
    builder: ClassVar[str] = "convergent.backbones.swin:SwinTransformer"

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


BackboneConfig = TextConfig | ViTConfig | SwinConfig
CONFIG_CLASSES: dict[str, type] = {c.family: c for c in (TextConfig, ViTConfig, SwinConfig)}


def vocabulary_overrides(base: TextConfig, vocab: dict) -> dict:
    """Fields of a text config that a tokenizer decides. ``vocab`` holds ``vocab_size``,
    ``pad_token_id``, ``mask_token_id`` and ``max_length`` (tokens per sample); the position
    table grows to ``max_length`` when ``base`` has fewer positions."""
    out = {k: vocab[k] for k in ("vocab_size", "pad_token_id", "mask_token_id")}
    if base.max_position < vocab["max_length"]:
        out["max_position"] = vocab["max_length"]
    return out


def config_to_dict(cfg: Any) -> dict:
    """JSON-ready dict with the family name, for ``config.json``."""
    return {"family": cfg.family, **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}}


def config_from_dict(data: dict, source: str = "config") -> Any:
    """Inverse of :func:`config_to_dict`; unknown keys are an error naming ``source``."""
    data = dict(data)
    family = data.pop("family", None)
    if family not in CONFIG_CLASSES:
        raise ValueError(f"{source}: 'family' must be one of {sorted(CONFIG_CLASSES)}, got {family!r}")
    cls = CONFIG_CLASSES[family]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{source}: unknown {family} config keys {unknown}; known keys: {sorted(known)}")
    return cls(**data)


def replace_config(cfg: Any, **overrides) -> Any:
    """Copy of ``cfg`` with ``overrides``; unknown keys are an error."""
    data = config_to_dict(cfg)
    data.update(overrides)
    return config_from_dict(data, source=f"overrides for {cfg.family}")


__all__ = ["BackboneConfig", "SwinConfig", "TextConfig", "ViTConfig", "config_from_dict", "config_to_dict", "field"]
