"""The closed vocabularies that configs name and code reads, defined once (torch-free, imports
nothing, so every layer may use it: the torch-free config validation as well as the modules
that act on the choice)."""

POOLINGS = ("cls", "avg", "eos", "default")
"""How tokens become one vector: 'cls' the first token, 'avg' the mean of the non-prefix (real)
tokens, 'eos' the last real token (text), 'default' the backbone's own ``pooled``."""
TARGET_NORMS = ("layer", "instance", "none")
"""data2vec's normalisations of teacher block outputs and of their average."""
DATA2VEC_MASK_KINDS = ("block", "patch", "token")
"""data2vec's mask generators (``Data2VecConfig.mask_kind`` also takes 'auto')."""
TOKENIZER_KINDS = ("wordpiece", "bpe")
"""Tokenizers a run trains: WordPiece (BERT) or byte-level BPE (GPT)."""
ENCODER_CONFIG = "config.json"
"""The config file ``save_pretrained`` writes: what makes a directory an encoder directory."""
CONTRASTIVE_HEADS = ("mlp", "tanh", "none")
"""Heads of the two-view contrastive tasks (SimCLR, SimCSE) between the pooled features and
the loss: 'mlp' SimCLR's projector (Linear-BN-ReLU layers, then Linear-BN), 'tanh' SimCSE's
Linear + tanh, 'none' the pooled features themselves."""
CONTRASTIVE_LOSSES = ("nt_xent", "info_nce")
"""Losses of the two-view contrastive tasks: 'nt_xent' (SimCLR: 2N x 2N, both views as anchors,
same-view negatives) or 'info_nce' (SimCSE: view-1 anchors against the N view-2 embeddings)."""
CLIP_LOSSES = ("softmax", "sigmoid")
"""CLIP task losses: 'softmax' (CLIP's symmetric InfoNCE) or 'sigmoid' (SigLIP's pairwise sigmoid)."""
DATA2VEC_TARGET_LAYERS = ("block", "ffn")
"""What a data2vec teacher layer contributes (``Data2VecConfig.target_layer`` also takes 'auto')."""
DATA2VEC_LOSS_REDUCTIONS = ("mean", "sum", "sqrt")
"""How data2vec reduces a token's per-feature loss (``Data2VecConfig.loss_reduction`` also takes 'auto')."""
ITM_NEGATIVES = ("dataset", "batch")
"""Where ViLT's image–text matching negatives come from: a random other image of the dataset
(``false_image``, ViLT's code) or another pair of the batch."""
FALSE_IMAGE = "false_image"
"""Batch key of a random other image of the dataset per sample (ViLT's ITM negatives), which an
image–text dataset yields on request and the Trainer transforms like ``image``."""
COMPILE_AUTO = "auto"
"""``trainer.compile``'s third value besides true and false (``convergent.training.compiling``)."""


def compile_setting_ok(value: object) -> bool:
    """Whether ``value`` is a ``trainer.compile`` setting: true, false or 'auto'."""
    return isinstance(value, bool) or value == COMPILE_AUTO
