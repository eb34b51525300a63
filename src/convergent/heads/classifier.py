"""Classification head and token pooling, shared by fine-tuning (``tasks/classify``) and the
frozen-feature probes (``evaluation/features``).

The head is dropout + one ``Linear``, as MAE's fine-tuning (``models_vit.py``): no extra
LayerNorm here, because every backbone's final tokens are already normalised
(``forward_features`` ends with the final norm). Weights start at truncated normal with a tiny
std (MAE: ``trunc_normal_(head.weight, std=2e-5)``), biases at zero, so the initial logits
are ~0 (uniform predictions) and the first updates do not push large random gradients into a
pre-trained backbone.
"""

import torch
from torch import nn

POOLINGS = ("avg", "cls", "default")


def pool_tokens(backbone: nn.Module, tokens: torch.Tensor, pooling: str) -> torch.Tensor:
    """Tokens ``(B, P + N, C)`` of ``backbone`` (P = ``backbone.num_prefix_tokens``) → ``(B, C)``.

    * ``"avg"``: mean of the N patch tokens (prefix tokens such as ViT's class token skipped);
    * ``"cls"``: the first prefix token; an error for backbones without one (Swin);
    * ``"default"``: ``backbone.pooled(tokens)`` (the backbone's own choice, e.g. ViT's
      ``global_pool`` and optional pooler).
    """
    prefix = int(getattr(backbone, "num_prefix_tokens", 0))
    if tokens.ndim != 3:
        raise ValueError(f"expected tokens of shape (B, N, C), got {tuple(tokens.shape)}")
    if pooling == "avg":
        if tokens.shape[1] <= prefix:
            raise ValueError(f"no patch tokens to average: {tokens.shape[1]} tokens, {prefix} prefix tokens")
        return tokens[:, prefix:].mean(dim=1)  # (B, C)
    if pooling == "cls":
        if prefix == 0:
            raise ValueError(
                f"pooling='cls' needs a class token, but {type(backbone).__name__} has no prefix tokens "
                "(num_prefix_tokens=0); use pooling='avg' or 'default'"
            )
        return tokens[:, 0]  # (B, C)
    if pooling == "default":
        return backbone.pooled(tokens)
    raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")


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
        self.fc = nn.Linear(in_dim, num_classes)
        self.init_std = init_std
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.fc.weight, std=self.init_std, a=-2 * self.init_std, b=2 * self.init_std)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(x))  # (B, num_classes)
