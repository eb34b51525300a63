"""Pre-norm Transformer block (ViT encoder, MAE decoder, CLIP's causal text tower)."""

import torch
from torch import nn

from convergent.layers.attention import Attention
from convergent.layers.drop import DropPath
from convergent.layers.mlp import Mlp
from convergent.layers.unpad import Unpadded


class Block(nn.Module):
    """``x + drop_path(attn(norm1(x)))``, then ``x + drop_path(mlp(norm2(x)))``; ``causal``:
    each token attends to itself and earlier tokens only (GPT / CLIP text)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        drop_path: float = 0.0,
        eps: float = 1e-6,
        act: str = "gelu",
        causal: bool = False,
    ):
        super().__init__()
        self.causal = causal
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_dropout, proj_drop=dropout)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim, dropout=dropout, act=act)
        self.drop_path = DropPath(drop_path)

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        unpadded: Unpadded | None = None,
        return_ffn: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``(B, N, C)`` → ``(B, N, C)``; with ``unpadded``, packed real tokens ``(T, C)`` → ``(T, C)``.
        ``return_ffn``: also the feed-forward branch ``mlp(norm2(x))`` before drop path and the
        residual (data2vec's "FFN output before the last residual")."""
        attn = self.attn(self.norm1(x), key_padding_mask=key_padding_mask, causal=self.causal, unpadded=unpadded)
        x = x + self.drop_path(attn)  # (B, N, C)
        ffn = self.mlp(self.norm2(x))
        x = x + self.drop_path(ffn)
        return (x, ffn) if return_ffn else x
