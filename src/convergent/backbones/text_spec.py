"""The text Transformer family's spec (torch-free): its config and its registered variants
(BERT sizes, CLIP's text tower). The model is :mod:`convergent.backbones.text`."""

from dataclasses import dataclass
from typing import ClassVar

from convergent.backbones.families import register_backbone, register_family


@register_family
@dataclass
class TextConfig:
    """Text Transformer encoder: BERT layout (post-norm) by default, ``pre_norm=True`` for the
    GPT-2 / CLIP layout; ``causal=True`` for left-to-right attention."""

    family: ClassVar[str] = "text"
    modality: ClassVar[str] = "text"
    builder: ClassVar[str] = "convergent.backbones.text:TextTransformer"
    converter: ClassVar[str | None] = "convergent.converters.hf_bert"

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
    cross_attention: bool = False
    """A decoder: each block attends, after its self-attention, over an encoder's states of the
    same width (HF ``BertLMHeadModel`` with ``add_cross_attention``: ``crossattention``, then a
    post-norm residual); the image-to-text decoder. BERT layout only."""

    def __post_init__(self):
        if self.cross_attention and self.pre_norm:
            raise ValueError("cross_attention is an option of the BERT layout (pre_norm false)")

    @property
    def num_blocks(self) -> int:
        """Transformer blocks (the indices of ``forward_intermediates``)."""
        return self.depth


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
