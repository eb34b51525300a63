"""Pre-norm Transformer block (ViT encoder, MAE decoder, CLIP's causal text tower)."""

import torch
from torch import nn

from convergent.layers.attention import Attention
from convergent.layers.drop import DropPath
from convergent.layers.mlp import Mlp
from convergent.layers.unpad import Unpadded


class Block(nn.Module):
    """``x + drop_path(attn(norm1(x)))``, then ``x + drop_path(mlp(norm2(x)))``; ``causal``:
    each token attends to itself and earlier tokens only (GPT / CLIP text); ``layer_scale``: each
    branch is multiplied by a learned per-channel vector (``gamma_1``, ``gamma_2``) initialised to
    that value (CaiT / BEiT's ``init_values``; None: no such vectors)."""

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
        layer_scale: float | None = None,
    ):
        super().__init__()
        self.causal = causal
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_dropout, proj_drop=dropout)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim, dropout=dropout, act=act)
        self.drop_path = DropPath(drop_path)
        if layer_scale is not None:
            self.gamma_1 = nn.Parameter(torch.full((dim,), float(layer_scale)))
            self.gamma_2 = nn.Parameter(torch.full((dim,), float(layer_scale)))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        unpadded: Unpadded | None = None,
        return_ffn: bool = False,
        bias: torch.Tensor | None = None,
        kv: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``(B, N, C)`` → ``(B, N, C)``; with ``unpadded``, packed real tokens ``(T, C)`` → ``(T, C)``.
        ``return_ffn``: also the feed-forward branch ``mlp(norm2(x))`` before layer scale, drop path
        and the residual (data2vec's "FFN output before the last residual"). ``bias``: an additive
        attention bias broadcastable to ``(B, heads, N, N)`` (a relative position bias). ``kv``: this
        block's entry of a :class:`~convergent.layers.attention.KVCache` (incremental decoding)."""
        attn = self.attn(
            self.norm1(x), bias=bias, key_padding_mask=key_padding_mask, causal=self.causal, unpadded=unpadded, kv=kv
        )
        if self.gamma_1 is not None:
            attn = self.gamma_1 * attn
        x = x + self.drop_path(attn)  # (B, N, C)
        ffn = self.mlp(self.norm2(x))
        x = x + self.drop_path(ffn if self.gamma_2 is None else self.gamma_2 * ffn)
        return (x, ffn) if return_ffn else x
