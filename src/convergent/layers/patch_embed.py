"""Image → patch tokens, and Swin's 2×2 patch merging."""

import torch
import torch.nn.functional as F
from torch import nn

from convergent.layers.linear import Linear


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` convolution to ``(B, N, C)`` tokens.

    Args:
        pad: pad the image on the right/bottom to a multiple of the patch size (Swin, as HF
            does); otherwise a size that is not a multiple raises a clear error (ViT).
        norm: apply LayerNorm to the tokens (Swin's ``patch_norm``).
        bias: learn a bias in the projection (CLIP's ViT has none: a LayerNorm follows).
    """

    def __init__(
        self,
        patch_size: int,
        in_chans: int,
        embed_dim: int,
        norm: bool = False,
        pad: bool = False,
        eps: float = 1e-5,
        bias: bool = True,
    ):
        super().__init__()
        self.patch_size = patch_size
        self.pad = pad
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias)
        self.norm = nn.LayerNorm(embed_dim, eps=eps) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``(B, C_in, H, W)`` → tokens ``(B, H/p * W/p, C)`` and the grid ``(H/p, W/p)``."""
        if x.ndim != 4:
            raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(x.shape)}")
        p = self.patch_size
        h, w = x.shape[-2:]
        if h % p or w % p:
            if not self.pad:
                raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
            x = F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))
        x = self.proj(x)  # (B, C, H/p, W/p)
        grid = (x.shape[-2], x.shape[-1])
        return self.norm(x.flatten(2).transpose(1, 2)), grid


class PatchMerging(nn.Module):
    """Concatenate each 2×2 neighbourhood (C → 4C) and reduce to 2C.

    Swin V1 normalises then reduces; Swin V2 (``post_norm``) reduces then normalises.
    Odd sizes are padded by one row/column, as HF and the official code do.
    """

    def __init__(self, dim: int, post_norm: bool = False, eps: float = 1e-5):
        super().__init__()
        self.post_norm = post_norm
        self.reduction = Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(2 * dim if post_norm else 4 * dim, eps=eps)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        """``(B, H*W, C)`` → ``(B, ceil(H/2)*ceil(W/2), 2C)`` and the new grid."""
        h, w = grid
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        # order of the official code: (0,0), (1,0), (0,1), (1,1)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        new_grid = (x.shape[1], x.shape[2])
        x = x.view(b, -1, 4 * c)  # (B, H/2*W/2, 4C)
        if self.post_norm:
            return self.norm(self.reduction(x)), new_grid
        return self.reduction(self.norm(x)), new_grid
