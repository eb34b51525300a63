"""Transformer feed-forward block."""

import torch
from torch import nn

from convergent.layers.linear import Linear


class Mlp(nn.Module):
    """``fc2(drop(act(fc1(x))))`` with exact GELU by default (BERT, ViT and Swin all use it;
    OpenAI's CLIP uses ``quick_gelu``)."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0, act: str = "gelu"):
        super().__init__()
        self.fc1 = Linear(dim, hidden_dim)
        self.act = _activation(act)
        self.fc2 = Linear(hidden_dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``: the GELU approximation OpenAI's CLIP was trained with (HF
    ``quick_gelu``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def _activation(name: str) -> nn.Module:
    table = {
        "gelu": nn.GELU,
        "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
        "quick_gelu": QuickGELU,
        "relu": nn.ReLU,
    }
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(table)}")
    return table[name]()
