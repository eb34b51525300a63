"""Typed task configurations (torch-free)."""

from dataclasses import dataclass, field


@dataclass
class SimMIMConfig:
    """SimMIM (Xie et al., 2022): mask random ``mask_patch_size`` squares, replace their patch
    embeddings by a learned mask token, predict raw pixels with a linear head, L1 on masked
    pixels only."""

    mask_patch_size: int = 32
    """Side of a masked square in pixels (paper: 32 at 192 px); a multiple of the model's patch size."""
    mask_ratio: float = 0.6
    """Fraction of squares masked."""
    norm_target: bool = False
    """Regress locally normalised pixels (each pixel standardised over the ``norm_target_window``
    square around it) instead of raw ones: off in the paper, on in the official Swin V2 SimMIM
    configs (``MODEL.SIMMIM.NORM_TARGET``)."""
    norm_target_window: int = 47
    """Odd side in pixels of that square (official: 47 at 192 px)."""
    encoder_stride: int | None = None
    """Output stride of the encoder (pixels per output token); None: the backbone's declared ``output_stride``."""


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
    """How tokens become one vector ('cls' | 'avg' | 'eos' | 'default', as everywhere): 'avg' (mean
    of patch / real tokens, MAE fine-tuning), 'cls' (the first token, where it summarises the
    input: ViT's class token, BERT's [CLS]), 'eos' (the last real token of a text), 'default'
    (the backbone's ``pooled``)."""
    head_dropout: float = 0.0
    """Dropout before the linear head."""
    head_init_std: float = 2e-5
    """Std of the head's truncated-normal weight init (MAE: 2e-5), so initial logits are ~0."""


@dataclass
class TokenMaskingConfig:
    """BERT's token masking (Devlin et al., 2019), shared by every objective that predicts hidden
    word ids (MLM, ViLT): choose ``mask_ratio`` of each sequence's real, non-special tokens (or
    whole words); of those, ``replace_prob`` become the mask token id, ``random_prob`` a
    uniformly random id of the vocabulary and the rest keep theirs."""

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
    whole_word_mask: bool = False
    """Choose whole words (all WordPiece pieces of a word together; ViLT's setting) when
    batches carry ``word_ids`` (B, L): the same id for the pieces of one word, -1 for special
    tokens (``Tokenizer.encode_batch(..., word_ids=True)``, which a run asks for when this is
    set); without them, tokens."""


@dataclass
class MLMConfig(TokenMaskingConfig):
    """BERT masked language modelling (Devlin et al., 2019): hide ``mask_ratio`` of each
    sequence's real, non-special tokens; of those, ``replace_prob`` become the backbone's
    ``mask_token_id``, ``random_prob`` a uniformly random id of the vocabulary and the rest
    stay as they are; cross-entropy on the hidden positions only, with an LM head tied to
    the input embedding."""


@dataclass
class CausalLMConfig:
    """Causal (left-to-right, GPT-style) language modelling: predict every real token from
    the ones before it, cross-entropy with an LM head tied to the input embedding. Needs a
    text backbone built with ``causal=True``."""

    label_smoothing: float = 0.0
    """Label smoothing of the next-token cross-entropy (GPT: 0)."""


@dataclass
class Data2VecConfig(TokenMaskingConfig):
    """data2vec (Baevski et al., 2022): a student sees a masked input and regresses, at the
    hidden positions, the average of the top-K normalised layer outputs of an EMA teacher
    that sees the whole input. One objective for text, ViT and Swin. Fields left ``None`` /
    ``'auto'`` take the official recipe of the mask kind: 'token' = fairseq
    ``examples/data2vec`` text (``data2vec_text.py``, ``config/text/pretraining/base.yaml``)
    with the paper's BERT masking (sec. 4.3); 'block' / 'patch' = data2vec_vision's ViT-B command
    (``beit/run_cyclical.py``, sec. 4.1). On a text backbone the chosen tokens are corrupted as
    BERT (the :class:`TokenMaskingConfig` fields: 80 % mask token, 10 % random id, 10 % kept)."""

    mask_kind: str = "auto"
    """Mask generator: 'auto' (the backbone's ``mask_kind``), 'token' (BERT: uniform tokens
    among real, non-special ones), 'block' (BEiT blocks on the patch grid), 'patch' (random
    squares of one final token each: SimMIM with mask size = output stride)."""
    mask_ratio: float | None = None
    """Fraction of maskable positions chosen; None: token 0.15 (sec. 4.3), block / patch 0.6 (sec. 4.1)."""
    target_layer: str = "auto"
    """What each teacher layer contributes: 'ffn' (the feed-forward output before the last
    residual and, post-LN, before the LayerNorm: fairseq's ``fc_results``, the paper's choice,
    sec. 3.3), 'block' (the block's output: data2vec_vision's ``--layer_results end``) or
    'auto' (token: 'ffn'; block / patch: 'block'). 'ffn' needs a backbone that declares
    ``supports_ffn_targets``."""
    top_k_layers: int | None = None
    """K, teacher layers averaged into the target; None: the official share of the blocks at
    the final resolution (``final_stage_depth``), rounded, at least 1: text 10 of 12, vision 6 of
    12 (the top half); a 12-block model gets exactly the official K."""
    target_norm: str = "layer"
    """Normalisation of each of the K layer outputs before averaging: 'layer' (parameter-free
    LayerNorm per token: fairseq text ``layer_norm_target_layer``, data2vec_vision's default),
    'instance' (per channel over the sequence's real positions, the paper's speech choice) or 'none'."""
    final_norm: str = "auto"
    """Normalisation of the averaged target: 'auto' (token: 'none' as fairseq text; block /
    patch: 'layer', data2vec_vision's ``--post_target_layer_norm``), 'layer', 'instance', 'none'."""
    loss_beta: float | None = None
    """Smooth L1 transition (0: squared error); None: token 4 (sec. 4.3), block / patch 2 (sec. 4.1)."""
    loss_reduction: str = "auto"
    """How the per-feature loss of a hidden token is reduced: 'sum' (fairseq text,
    ``loss_scale: 1``), 'sqrt' (sum / sqrt(D): fairseq's default ``loss_scale: None``), 'mean'
    (data2vec_vision's ``F.smooth_l1_loss``) or 'auto' (token: 'sum'; block / patch: 'mean').
    Tokens are averaged in every case. With Adam only gradient clipping sees the difference."""
    head_layers: int | None = None
    """Layers of the regression head: 1 (a linear map) or more (Linear(D, 2D), GELU, ...,
    Linear(., D), fairseq's ``head_layers``); None: token 2 (fairseq text), block / patch 1."""
    ema_decay: float | None = None
    """Teacher momentum at step 0 (tau_0); None: token 0.999 (fairseq text), block / patch 0.9998
    (data2vec_vision: constant)."""
    ema_end_decay: float | None = None
    """Teacher momentum from ``ema_anneal_end_step`` on (tau_e); None: token 0.9999, block / patch 0.9998."""
    ema_anneal_end_step: int | None = None
    """Steps over which the momentum rises linearly from ``ema_decay`` to ``ema_end_decay``;
    None: token 30 % of the run's ``max_steps`` (fairseq text: 300k of 1M updates), block /
    patch the run's ``max_steps``."""
    ema_transformer_only: bool | None = None
    """Average only the Transformer blocks into the teacher and share the rest (embeddings,
    final norm, pooler: the parameters the backbone's ``layer_id`` puts outside the blocks) with
    the student, as fairseq text's ``ema_transformer_layers_only``; False: average the whole
    backbone (data2vec_vision); None: token True, block / patch False."""


@dataclass
class MoCoV3Config:
    """MoCo v3 (Chen, Xie, He, 2021): two augmented views; the query encoder (backbone +
    projector + predictor) predicts, per view, the momentum encoder's key of the other view,
    InfoNCE against every other key in the batch. Defaults are the paper's ViT setting."""

    hidden_dim: int = 4096
    """Hidden width of the projector and predictor MLPs (paper: 4096)."""
    out_dim: int = 256
    """Output width of the projector and predictor (paper: 256)."""
    proj_layers: int = 3
    """Linear layers of the projector (paper: 3 for ViT, 2 for ResNet)."""
    pred_layers: int = 2
    """Linear layers of the predictor (paper: 2)."""
    temperature: float = 0.2
    """Softmax temperature tau of the contrastive loss (paper: 0.2 for ViT, 1.0 for ResNet)."""
    momentum: float = 0.99
    """Momentum-encoder EMA momentum at step 0 (paper: 0.99 for ViT)."""
    momentum_end: float = 1.0
    """Momentum at the last step, reached on a half cosine (paper: 1.0; equal to ``momentum``: constant)."""
    sync_bn: bool = True
    """BatchNorm of the MLPs over the global batch under DDP (SyncBatchNorm, as the paper; needs
    GPUs). Per-process BN would let the loss tell a process's own keys apart by their statistics."""


@dataclass
class ContrastiveConfig:
    """Two-view contrastive learning, one objective for images and text: two views of each
    sample — two augmentations of an image (SimCLR, Chen et al., 2020) or the same sentence
    encoded twice with the encoder's dropout as the only noise (unsupervised SimCSE, Gao, Yao,
    Chen, 2021) — pooled, passed through a head, L2-normalised; each view's embedding must
    pick out the other view of its sample among the other samples of the global batch.
    :class:`SimCLRConfig` and :class:`SimCSEConfig` are this with each paper's defaults."""

    temperature: float = 0.1
    """Softmax temperature tau of the loss (SimCLR code: 0.1; SimCSE: 0.05)."""
    pooling: str = "default"
    """Tokens → one vector ('cls' | 'avg' | 'eos' | 'default', as everywhere)."""
    head: str = "mlp"
    """Head between the pooled features and the loss (used in training only; evaluations read
    the backbone): 'mlp' (SimCLR's projector: (Linear-BN-ReLU) x (head_layers - 1), Linear-BN),
    'tanh' (SimCSE's Linear + tanh, width kept), 'none'."""
    head_layers: int = 3
    """Linear layers of the 'mlp' head (SimCLR v1 paper: 2; v2 and the official code: 3)."""
    hidden_dim: int | None = None
    """Hidden width of the 'mlp' head; None: the backbone's width (SimCLR: the encoder's 2048)."""
    out_dim: int = 128
    """Output width of the 'mlp' head (SimCLR: 128); the 'tanh' head keeps the backbone's width."""
    loss: str = "nt_xent"
    """'nt_xent' (SimCLR: all 2N embeddings are anchors, the N - 1 other samples of both views
    are negatives) or 'info_nce' (SimCSE: view-1 anchors against the N view-2 embeddings)."""
    sync_bn: bool = True
    """BatchNorm of the 'mlp' head over the global batch under DDP (SyncBatchNorm, SimCLR's
    ``global_bn``; needs GPUs)."""


@dataclass
class SimCLRConfig(ContrastiveConfig):
    """SimCLR (Chen et al., 2020; v2: Chen et al., 2020b): two augmented views of each image, a
    BN projector MLP, NT-Xent over the global batch. Defaults: the official code
    (``google-research/simclr``: temperature 0.1, 3-layer projector, hidden = encoder width,
    out 128)."""


@dataclass
class SimCSEConfig(ContrastiveConfig):
    """Unsupervised SimCSE (Gao, Yao, Chen, 2021): each sentence encoded twice by a text
    encoder in training mode, so that its dropout makes two views; the [CLS] token through a
    Linear + tanh head; InfoNCE of the first encodings against the second ones of the batch.
    Defaults: the official unsupervised recipe (``princeton-nlp/SimCSE``: temperature 0.05,
    ``--pooler_type cls --mlp_only_train``)."""

    temperature: float = 0.05
    """Softmax temperature (SimCSE unsup: 0.05)."""
    pooling: str = "cls"
    """Tokens → one vector (SimCSE: 'cls', the [CLS] token)."""
    head: str = "tanh"
    """SimCSE's MLP: Linear + tanh over [CLS] in training only (``--mlp_only_train``)."""
    loss: str = "info_nce"
    """SimCSE: cross-entropy of cos(z1_i, z2_j) / tau over j (one direction, no same-view negatives)."""


@dataclass
class CLIPConfig:
    """CLIP (Radford et al., 2021): an image tower (the task's backbone) and a text tower, each
    pooled and linearly projected (no bias) into one embedding space, L2-normalised; a
    learned temperature; the symmetric InfoNCE of matching image–text pairs against every
    other pair of the global batch (all processes' features gathered, with gradient), or
    SigLIP's sigmoid loss (``loss: sigmoid``)."""

    text_backbone: str = "clip_text_base"
    """Registered text backbone variant of the text tower (paper: 'clip_text_base', 512 x 12,
    causal, pre-norm)."""
    text_overrides: dict = field(default_factory=dict)
    """Overrides of the text backbone's config, e.g. ``{"vocab_size": 8000, "pad_token_id": 0}``
    (a run sets the tokenizer's vocabulary size and ids here)."""
    embed_dim: int = 512
    """Width of the joint embedding space (CLIP ViT-B: 512)."""
    image_pooling: str = "default"
    """Image tokens → one vector, in the one pooling vocabulary ('cls' | 'avg' | 'eos' |
    'default'; ``heads/classifier.py:POOLINGS``): 'default' (the backbone's ``pooled``: ViT's
    class token, Swin's mean), 'cls' (class token), 'avg' (mean of patch tokens)."""
    text_pooling: str = "eos"
    """Text tokens → one vector: 'eos' (the last real token, where CLIP's tokenizer puts its
    end-of-text token; the only one a causal tower lets see the whole text), 'cls' (the first
    token), 'avg' (mean of the real tokens), 'default' (the tower's ``pooled``)."""
    loss: str = "softmax"
    """'softmax' (CLIP: symmetric InfoNCE over the gathered global batch) or 'sigmoid' (SigLIP,
    Zhai et al., 2023: a binary logistic loss on every image–text pair, with a learned bias;
    under DDP the texts travel around a ring of processes instead of being gathered)."""
    init_temperature: float | None = None
    """Initial temperature; the learned logit scale starts at log(1 / init_temperature). None:
    the paper's, 0.07 for 'softmax' (CLIP) and 0.1 for 'sigmoid' (SigLIP: t' = log 10)."""
    init_bias: float = -10.0
    """Initial value of the learned logit bias of the 'sigmoid' loss (SigLIP: -10, so that the
    many negatives start with a small loss); not used by 'softmax'."""
    max_logit_scale: float = 100.0
    """Upper bound of the logit scale exp(s) (paper: clipped at 100 to keep training stable)."""
    local_loss: bool = False
    """Under DDP, score each process's own images and texts against all gathered ones (B x N
    logits, open_clip's ``local_loss``) instead of the full N x N matrix on every process:
    the same gradients, less compute and memory for large global batches."""


@dataclass
class ViLTConfig(TokenMaskingConfig):
    """ViLT (Kim, Son, Kim, 2021): one Transformer (the task's ViT backbone) over the joint
    sequence ``[text tokens ; image patches]``, each part with its own position embeddings plus
    a learned modality-type embedding. Pre-training adds image–text matching (ITM: the pooled
    first token, text [CLS], scores whether the image belongs to the text; a share of the
    images is replaced by random other images of the dataset) and masked language modelling
    conditioned on the image (MLM: BERT's 15 % with 80/10/10, on matched pairs only; the
    masking fields are :class:`TokenMaskingConfig`'s). The text fields come from the run's
    tokenizer."""

    vocab_size: int | None = None
    """Rows of the text word embedding (and of the tied LM head); a run sets the tokenizer's
    vocabulary size. Required."""
    pad_token_id: int = 0
    """Id of the padding token (its embedding row starts at zero, BERT's ``padding_idx``); a run
    sets the tokenizer's."""
    mask_token_id: int | None = None
    """Id that replaces 80 % of the tokens chosen for MLM; a run sets the tokenizer's. Required."""
    max_text_len: int = 40
    """Learned text positions, the longest text the model reads (ViLT: 40); a run raises it to
    ``data.max_length`` when that is longer."""
    itm_weight: float = 1.0
    """Weight of the ITM cross-entropy in the loss."""
    mlm_weight: float = 1.0
    """Weight of the MLM cross-entropy in the loss."""
    itm_neg_ratio: float = 0.5
    """Fraction of the batch whose image is replaced by another image for ITM (exactly
    ``round(ratio * B)`` pairs, chosen at random, as ViLT's code: half)."""
    itm_negatives: str = "dataset"
    """Where an ITM negative's image comes from: 'dataset' (a random other image of the dataset,
    drawn per sample by the data side as the batch key ``false_image``: ViLT's
    ``get_false_image``) or 'batch' (another pair's image of the same batch, a random derangement)."""
    single_pass: bool = False
    """False (ViLT): two passes, MLM over masked text with each text's own image and ITM over
    the unmasked text with the swapped images. True: one pass over the masked text with the
    swapped images (half the compute), MLM counted on the matched pairs only."""


@dataclass
class TeacherConfig:
    """A frozen, pre-trained image encoder a task distils (the fields every such task shares).
    A run loads it (``convergent.workflows.teacher``) and hands it to the task with the
    normalisation its inputs need; the task keeps it frozen, out of the optimizer and out of the
    saved encoder (it is in the training checkpoints, so a resumed run uses the same weights)."""

    teacher: str | None = None
    """Where the teacher is: the run directory of another ``convergent pretrain`` run (its
    ``encoder/``), an encoder directory written by ``save_pretrained``, or a Hugging Face model
    directory (``config.json`` + weights: CLIP or its vision tower, ViT, Swin / Swin V2, ConvNeXt),
    converted on load with ``convergent.converters``. Required."""
    teacher_img_size: int | None = None
    """Side of the images the teacher reads. None: the student's view as it is, the teacher's
    position table / windows adapted to that size when it is loaded (as ``from_pretrained`` with a
    new ``img_size``); a number: the view resized to it first (bilinear, antialiased), the teacher
    kept at that resolution (the official FD code resizes to 224 for its CLIP ViT-L/14 teacher)."""
    teacher_mean: tuple[float, ...] | None = None
    """Per-channel mean of the normalisation the teacher was trained with. The view the student
    gets (``data.mean`` / ``data.std``) is re-normalised to it for the teacher. None: what the
    teacher's source records — a run's ``data.mean`` (its ``config.yaml``; a CLIP converted with
    ``convergent convert`` records the CLIP processor's), a HF directory's
    ``preprocessor_config.json`` (a CLIP without one: OpenAI's) — and the student's own data
    normalisation when the source records none (an encoder directory outside a run; a warning
    says so). Give ``teacher_std`` with it."""
    teacher_std: tuple[float, ...] | None = None
    """Per-channel std of the teacher's normalisation; None: as ``teacher_mean``."""


@dataclass
class FDConfig(TeacherConfig):
    """Feature distillation (Wei et al., 2022, "Contrastive learning rivals masked image modeling
    in fine-tuning via feature distillation"; official code ``SwinTransformer/Feature-Distillation``,
    ``models/feature_distillation.py``): a student image encoder regresses, through a 1x1
    projection of its final token map, the whitened final token map of a frozen teacher that sees
    the same view. Defaults are the official code's."""

    teacher_final_norm: bool = True
    """Targets after the teacher's final norm (official ``PRED_FEAT_AFTERNORM: True``: CLIP's
    ``ln_post``, DINO / DeiT's ``norm``); False: the last block's output before it."""
    whiten: bool = True
    """Whiten the targets per token with a parameter-free LayerNorm (paper sec. 3.1, official
    ``ln_tgt = nn.LayerNorm(embed_dim, elementwise_affine=False)``)."""
    whiten_eps: float = 1e-5
    """Epsilon of that LayerNorm (official: ``nn.LayerNorm``'s default, 1e-5)."""
    loss_beta: float = 2.0
    """Smooth L1 transition (official ``nn.SmoothL1Loss(beta=2.0)``, averaged over every element;
    0: squared error)."""


@dataclass
class VQVAEConfig:
    """VQ-VAE image tokenizer (van den Oord et al., 2017, "Neural Discrete Representation
    Learning"): an image encoder's token map, projected to ``code_dim``, is replaced by its
    nearest codes (EMA codebook, the paper's appendix / sonnet ``VectorQuantizerEMA``; dead codes
    restarted from the batch as in Jukebox), and a convolutional decoder reconstructs the image
    (MSE) from them; the encoder also pays the commitment loss. The token grid is the encoder's
    (its declared ``output_stride``). Defaults are the paper's."""

    num_codes: int = 512
    """Codebook size K (paper: 512)."""
    code_dim: int = 64
    """Width of a code (paper: 64)."""
    decay: float = 0.99
    """EMA decay of the codebook statistics (paper: 0.99)."""
    commitment: float = 0.25
    """Weight beta of the commitment loss (paper: 0.25)."""
    eps: float = 1e-5
    """Laplace smoothing of the code counts (sonnet's epsilon)."""
    restart_threshold: float = 1.0
    """Codes whose EMA count falls below this restart from random encoder outputs of the batch
    (Jukebox: 1.0); 0: never (the paper)."""
    decoder_width: int = 128
    """Channels of the decoder's residual stack (sonnet's VQ-VAE example: 128; paper: 256)."""
    decoder_res_blocks: int = 2
    """Residual blocks (3x3 then 1x1 convolutions, width/4 hidden) before upsampling (paper: 2)."""


@dataclass
class VisualTokensConfig:
    """Base of the tasks whose targets are the codes of a frozen image tokenizer (BEiT,
    text-to-image): the run loads the tokenizer named here."""

    tokenizer: str | None = None
    """The image tokenizer: a ``convergent pretrain --task.name vqvae`` run directory or its
    ``image_tokenizer/`` directory. It reads this run's images as they are: train both with the
    same data normalisation and image size."""


@dataclass
class BEiTConfig(VisualTokensConfig):
    """BEiT (Bao et al., 2022, "BEiT: BERT Pre-Training of Image Transformers"; official
    ``unilm/beit``): hide blocks of patches behind the mask token and predict, at each hidden
    patch, the id of its visual token — given by a frozen image tokenizer (here a ``vqvae``
    run's, as the paper's DALL-E dVAE) — with a linear head and cross-entropy over the codebook.
    The tokenizer's grid must be the backbone's patch grid (its stride the backbone's patch
    size). Defaults are the paper's (ImageNet, 14x14 patches)."""

    mask_ratio: float = 0.4
    """Fraction of patches hidden (paper: 75 of 196, ~40 %)."""
    min_block_patches: int = 16
    """Smallest masked block, in patches (paper: 16 on a 14x14 grid)."""
    min_aspect: float = 0.3
    """Smallest aspect ratio of a block (paper: 0.3; the largest is its inverse)."""
    head_init_std: float = 0.02
    """Std of the truncated-normal init of the prediction head's weights (paper: 0.02)."""


@dataclass
class TextToImageConfig(VisualTokensConfig):
    """Text-to-image generation as DALL-E (Ramesh et al., 2021, "Zero-Shot Text-to-Image
    Generation"): one causal Transformer over ``[caption tokens ; image codes]``, the codes given
    by a frozen image tokenizer (a ``vqvae`` run; DALL-E: its dVAE), each code with its own
    embedding table and a learned row + column position embedding; next-token cross-entropy on
    both parts, weighted. Defaults are the paper's where it has one."""

    text_loss_weight: float = 0.125
    """Weight of the caption's loss; the image's is ``1 - text_loss_weight`` (DALL-E: 1/8 and 7/8)."""
    caption_dropout: float = 0.0
    """Probability of training on an empty caption instead of the image's (1.0: an unconditional
    model of the visual tokens, iGPT's setting)."""
    text_length: int | None = None
    """Caption tokens before the image codes (captions are padded to it, as DALL-E's 256); None:
    the run's ``data.max_length``."""


@dataclass
class CaptionConfig:
    """Image-to-text (captioning) as an encoder-decoder: the task's image backbone encodes; a
    causal text Transformer with cross-attention blocks over the image tokens (HF
    ``BertLMHeadModel`` with ``add_cross_attention``; the image tokens linearly projected to its
    width when they differ) decodes, with an LM head tied to its word embeddings; teacher-forced
    next-token cross-entropy on the captions. Greedy or beam-search decoding."""

    text_backbone: str = "bert_mini"
    """Registered text backbone variant of the decoder (BERT layout); built causal, with cross-attention."""
    text_overrides: dict = field(default_factory=dict)
    """Overrides of the decoder's config (a run sets the tokenizer's vocabulary size and ids here)."""
    label_smoothing: float = 0.0
    """Label smoothing of the caption loss."""
    beam_size: int = 3
    """Beams of the beam search of the evaluation and ``convergent caption`` (1: greedy)."""
    max_new_tokens: int = 20
    """Longest caption generated, in tokens after the start token."""
