"""Pixel decoders for masked image modelling.

* :class:`LinearPixelDecoder` — SimMIM's head: a 1×1 convolution from the encoder's tokens to
  ``stride² · C`` values per token, rearranged into pixels by ``PixelShuffle(stride)``;
* :class:`MAEDecoder` — MAE's light Transformer decoder: embed the visible tokens, put a
  learned mask token at every hidden position, add fixed 2-D sin-cos positions, run
  pre-norm blocks, predict ``patch² · C`` pixel values per patch.
"""

import math

import torch
from torch import nn

from convergent.layers import Block, interpolate_pos_embed, sincos_pos_embed_2d
from convergent.layers.linear import Linear


def _square_grid(n: int) -> tuple[int, int]:
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{n} tokens do not form a square grid; pass grid=(h, w)")
    return side, side


class LinearPixelDecoder(nn.Module):
    """SimMIM's linear head (HF ``*ForMaskedImageModeling.decoder``).

    Args:
        in_dim: token width of the encoder output.
        stride: pixels per output token along each side (the encoder's total stride).
        out_chans: image channels to predict.
    """

    def __init__(self, in_dim: int, stride: int, out_chans: int = 3):
        super().__init__()
        self.stride = stride
        self.out_chans = out_chans
        self.proj = nn.Conv2d(in_dim, stride**2 * out_chans, kernel_size=1)
        self.shuffle = nn.PixelShuffle(stride)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """Tokens ``(B, h*w, C)`` in row-major order → images ``(B, out_chans, h*stride, w*stride)``."""
        b, n, c = tokens.shape
        h, w = grid if grid is not None else _square_grid(n)
        x = tokens.transpose(1, 2).reshape(b, c, h, w)  # (B, C, h, w)
        return self.shuffle(self.proj(x))  # (B, stride²·out, h, w) -> (B, out, h·s, w·s)


class MAEDecoder(nn.Module):
    """MAE's decoder (``models_mae.py`` / HF ``ViTMAEDecoder``).

    Args:
        num_patches: patches of the configured image (a square grid).
        in_dim: encoder token width.
        decoder_dim, depth, heads: decoder width, blocks and attention heads.
        patch_size: pixels per patch side; ``out_chans`` image channels predicted per pixel.
        mlp_ratio: feed-forward width as a multiple of ``decoder_dim``.
        eps: LayerNorm epsilon (MAE: 1e-6; HF ViTMAE: its ``layer_norm_eps``).
        act: feed-forward activation.

    ``pos_embed`` is a persistent buffer (fixed, not trained; saved so checkpoints that
    carry other values, e.g. HF's, load exactly).
    """

    def __init__(
        self,
        num_patches: int,
        in_dim: int,
        decoder_dim: int,
        depth: int,
        heads: int,
        patch_size: int,
        out_chans: int = 3,
        mlp_ratio: float = 4.0,
        eps: float = 1e-6,
        act: str = "gelu",
    ):
        super().__init__()
        self.grid = _square_grid(num_patches)
        self.embed = Linear(in_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("pos_embed", sincos_pos_embed_2d(self.grid, decoder_dim)[None])  # (1, 1+N, D)
        self.blocks = nn.ModuleList(
            Block(decoder_dim, heads, int(decoder_dim * mlp_ratio), qkv_bias=True, eps=eps, act=act)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(decoder_dim, eps=eps)
        self.pred = Linear(decoder_dim, patch_size**2 * out_chans)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MAE: Xavier-uniform linears with zero bias, unit LayerNorms, mask token N(0, 0.02)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(
        self, tokens: torch.Tensor, ids_restore: torch.Tensor, grid: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Encoder output of the kept patches → per-patch pixel predictions.

        Args:
            tokens: ``(B, 1 + K, C_enc)``, the class token first, then the K kept patches in
                the shuffled order of :func:`convergent.masking.random_masking`.
            ids_restore: ``(B, N)`` inverse permutation from the same call.
            grid: patch grid ``(h, w)`` with ``h*w = N`` (default: square).
        Returns:
            ``(B, N, patch² · out_chans)`` in patch order (class token dropped).
        """
        x = self.embed(tokens)  # (B, 1+K, D)
        b, n = ids_restore.shape
        d = x.shape[-1]
        if x.shape[1] - 1 > n:
            raise ValueError(f"{x.shape[1] - 1} kept tokens but ids_restore covers only {n} patches")
        mask_tokens = self.mask_token.to(x.dtype).expand(b, n + 1 - x.shape[1], d)  # (B, N-K, D)
        patches = torch.cat([x[:, 1:], mask_tokens], dim=1)  # shuffled order
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, d))  # patch order
        x = torch.cat([x[:, :1], patches], dim=1) + self._pos_embed(grid or _square_grid(n)).to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x))[:, 1:]  # (B, N, p²·C)

    def _pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        """``(1, 1 + h*w, D)`` positions for ``grid``; bicubically resized when it differs."""
        return interpolate_pos_embed(self.pos_embed, self.grid, tuple(grid), num_prefix=1)
