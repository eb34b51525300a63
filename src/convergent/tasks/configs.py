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


@dataclass
class MLMConfig:
    """BERT masked language modelling (Devlin et al., 2019): hide ``mask_ratio`` of each
    sequence's real, non-special tokens; of those, ``replace_prob`` become the backbone's
    ``mask_token_id``, ``random_prob`` a uniformly random id of the vocabulary and the rest
    stay as they are; cross-entropy on the hidden positions only, with an LM head tied to
    the input embedding."""

    mask_ratio: float = 0.15
    """Fraction of each sequence's candidate tokens (real, non-special) chosen for prediction."""
    replace_prob: float = 0.8
    """Of the chosen tokens, the fraction replaced by the mask token id."""
    random_prob: float = 0.1
    """Of the chosen tokens, the fraction replaced by a random id from the full vocabulary
    (as HF ``DataCollatorForLanguageModeling``); the remaining ``1 - replace_prob -
    random_prob`` keep their id."""
    special_ids: tuple[int, ...] = ()
    """Token ids never chosen when a batch has no ``special_tokens_mask`` (e.g. 101, 102 for
    [CLS], [SEP] of the BERT uncased vocabulary); padding and the mask id are always excluded."""


@dataclass
class CausalLMConfig:
    """Causal (left-to-right, GPT-style) language modelling: predict every real token from
    the ones before it, cross-entropy with an LM head tied to the input embedding. Needs a
    text backbone built with ``causal=True``."""

    label_smoothing: float = 0.0
    """Label smoothing of the next-token cross-entropy (GPT: 0)."""


@dataclass
class Data2VecConfig:
    """data2vec (Baevski et al., 2022): a student sees a masked input and regresses, at the
    hidden positions, the average of the top-K normalised block outputs of an EMA teacher
    that sees the whole input. One objective for text, ViT and Swin. Fields left ``None``
    take the paper's value for the backbone's mask kind (token: text sec. 4.3; block / patch:
    vision sec. 4.1)."""

    mask_kind: str = "auto"
    """Mask generator: 'auto' (the backbone's ``mask_kind``), 'token' (BERT: uniform tokens
    among real, non-special ones), 'block' (BEiT blocks on the patch grid), 'patch' (random
    squares of one final token each: SimMIM with mask size = output stride)."""
    mask_ratio: float | None = None
    """Fraction of maskable positions hidden; None: token 0.15 (sec. 4.3), block / patch 0.6 (sec. 4.1)."""
    top_k_layers: int | None = None
    """K, teacher blocks averaged into the target; None: the paper's K (text 10, vision 6)
    capped at the blocks the backbone has at its final resolution (``final_stage_depth``)."""
    target_norm: str = "layer"
    """Normalisation of each of the K block outputs before averaging: 'layer' (parameter-free
    LayerNorm per token, the paper's choice for text and vision, sec. 3.3), 'instance'
    (per channel over the sequence's real positions, the paper's choice for speech) or 'none'."""
    final_norm: str = "none"
    """Normalisation of the averaged target: 'none' (paper), 'layer' or 'instance'."""
    loss_beta: float | None = None
    """Smooth L1 transition (0: squared error); None: token 4 (sec. 4.3), block / patch 2 (sec. 4.1)."""
    ema_decay: float = 0.999
    """Teacher momentum at step 0 (tau_0, sec. 4.2 / 4.3)."""
    ema_end_decay: float = 0.9999
    """Teacher momentum from ``ema_anneal_end_step`` on (tau_e, sec. 4.2 / 4.3)."""
    ema_anneal_end_step: int | None = None
    """Steps over which the momentum rises linearly (tau_n; text 100k, speech 30k); None: the
    run's ``max_steps`` (fairseq's default)."""
