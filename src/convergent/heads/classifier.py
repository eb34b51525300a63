"""Classification head and token pooling, shared by fine-tuning (``tasks/classify``) and the
frozen-feature probes (``evaluation/features``), for image and text backbones alike.

The head is dropout + one ``Linear``, as MAE's fine-tuning (``models_vit.py``): no extra
LayerNorm here, because every backbone's final tokens are already normalised
(``forward_features`` ends with the final norm). Weights start at truncated normal with a tiny
std (MAE: ``trunc_normal_(head.weight, std=2e-5)``), biases at zero, so the initial logits
are ~0 (uniform predictions) and the first updates do not push large random gradients into a
pre-trained backbone.
"""

import torch
from torch import nn

from convergent.choices import POOLINGS
from convergent.layers.linear import Linear

# POOLINGS (convergent.choices) is the one pooling vocabulary: fine-tuning, probes, CLIP's towers.


def has_class_token(backbone: nn.Module) -> bool:
    """Whether ``pooling="cls"`` means something: the backbone's ``first_token_summarises``
    (ViT's class token, a bidirectional text encoder's [CLS]; not Swin, not causal text)."""
    return backbone.first_token_summarises


def check_pooling(backbone: nn.Module, pooling: str, field: str = "pooling") -> None:
    """Raise a clear error, naming the config ``field``, when ``pooling`` is not one of
    :data:`POOLINGS`, is ``"cls"`` for a backbone without a class token or ``"eos"`` for one
    that does not read text; for tasks to call when they are built (:func:`pool_tokens` would
    only fail at the first batch)."""
    if pooling not in POOLINGS:
        raise ValueError(f"{field} must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if pooling == "eos" and backbone.modality != "text":
        raise ValueError(f"{field}='eos' pools the last real token of a text; {type(backbone).__name__} reads images")
    if pooling == "cls" and not has_class_token(backbone):
        raise ValueError(
            f"{field}='cls' needs a first token that summarises the input (a class token, or the [CLS] of a "
            f"bidirectional text encoder), but {type(backbone).__name__}'s first token does not (no prefix "
            "tokens, or causal attention); use 'avg' or 'default'"
        )


def pool_tokens(
    backbone: nn.Module, tokens: torch.Tensor, pooling: str, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Tokens ``(B, P + N, C)`` of ``backbone`` (P = ``backbone.num_prefix_tokens``) → ``(B, C)``.

    * ``"avg"``: mean of the N non-prefix tokens (prefix tokens such as ViT's class token
      skipped); with ``attention_mask`` ``(B, P + N)`` (1/True = real token, 0/False =
      padding, as the text backbone takes it) the mean runs over the real tokens only, so a
      sample's features do not depend on how far its batch was padded;
    * ``"cls"``: the first token (ViT's class token, text's ``[CLS]``); an error for backbones
      without one (Swin), see :func:`has_class_token`;
    * ``"eos"``: the last real token of each text (the last position where ``attention_mask``
      is 1; the last position without a mask), as CLIP's text tower pools;
    * ``"default"``: ``backbone.pooled(tokens)`` (the backbone's own choice, e.g. ViT's
      ``global_pool`` and optional pooler, BERT's first token and pooler).
    """
    prefix = backbone.num_prefix_tokens
    if tokens.ndim != 3:
        raise ValueError(f"expected tokens of shape (B, N, C), got {tuple(tokens.shape)}")
    if pooling == "avg":
        if tokens.shape[1] <= prefix:
            raise ValueError(f"no patch tokens to average: {tokens.shape[1]} tokens, {prefix} prefix tokens")
        if attention_mask is None:
            return tokens[:, prefix:].mean(dim=1)  # (B, C)
        return _masked_mean(tokens[:, prefix:], real_tokens(attention_mask, tokens)[:, prefix:])
    check_pooling(backbone, pooling)  # an unknown name, 'cls' without a summarising first token, ...
    if pooling == "cls":
        return tokens[:, 0]  # (B, C)
    if pooling == "eos":
        return _last_real(tokens, attention_mask)
    return backbone.pooled(tokens)


def _last_real(tokens: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The last real token of each row of ``tokens`` ``(B, L, C)`` → ``(B, C)``."""
    if attention_mask is None:
        return tokens[:, -1]
    last = tokens.shape[1] - 1 - real_tokens(attention_mask, tokens).flip(1).int().argmax(dim=1)  # (B,)
    return tokens[torch.arange(tokens.shape[0], device=tokens.device), last]


def real_tokens(attention_mask: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``attention_mask`` as bool ``(B, N)``, True = real token, checked against ``tokens`` ``(B, N, C)``."""
    if attention_mask.shape != tokens.shape[:2]:
        raise ValueError(
            f"attention_mask of shape {tuple(attention_mask.shape)} does not match tokens {tuple(tokens.shape[:2])}"
        )
    return attention_mask.bool()


def _masked_mean(tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of ``tokens`` ``(B, N, C)`` over the positions where ``keep`` ``(B, N)`` is True
    (zeros for a row with none); padded positions add exact zeros, whatever they hold."""
    total = tokens.masked_fill(~keep.unsqueeze(-1), 0).sum(dim=1)  # (B, C)
    count = keep.sum(dim=1, keepdim=True).clamp_min(1).to(tokens.dtype)  # (B, 1)
    return total / count


class ClassifierHead(nn.Module):
    """Pooled features ``(B, in_dim)`` → logits ``(B, num_classes)``: dropout, then Linear.

    Args:
        in_dim: feature width (the backbone's ``num_features``).
        num_classes: number of classes.
        dropout: dropout probability before the linear layer (MAE fine-tuning: 0).
        init_std: std of the truncated-normal weight init (MAE: 2e-5); biases start at zero.
    """

    def __init__(self, in_dim: int, num_classes: int, dropout: float = 0.0, init_std: float = 2e-5):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.drop = nn.Dropout(dropout)
        self.fc = Linear(in_dim, num_classes)
        self.init_std = init_std
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.fc.weight, std=self.init_std, a=-2 * self.init_std, b=2 * self.init_std)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(x))  # (B, num_classes)
