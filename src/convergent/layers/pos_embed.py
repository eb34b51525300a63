"""Position information: ViT absolute embeddings (with resizing), Swin V1 relative position
bias tables, Swin V2 log-spaced continuous position bias."""

import math

import torch
import torch.nn.functional as F
from torch import nn


def interpolate_pos_embed(
    pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int], num_prefix: int = 1
) -> torch.Tensor:
    """Resize ``(1, prefix + Ho*Wo, C)`` absolute position embeddings to a new patch grid with
    bicubic interpolation (``align_corners=False``, as HF ViT's ``interpolate_pos_encoding``).
    Prefix (class) token embeddings are kept as they are."""
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    c = grid.shape[-1]
    if grid.shape[1] != old_grid[0] * old_grid[1]:
        raise ValueError(f"position embedding holds {grid.shape[1]} patch positions, expected {old_grid}")
    grid = grid.reshape(1, old_grid[0], old_grid[1], c).permute(0, 3, 1, 2)  # (1, C, Ho, Wo)
    grid = F.interpolate(grid.float(), size=tuple(new_grid), mode="bicubic", align_corners=False)
    grid = grid.to(pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, -1, c)
    return torch.cat([prefix, grid], dim=1)


def interpolate_rel_pos_table(table: torch.Tensor, old_ws: tuple[int, int], new_ws: tuple[int, int]) -> torch.Tensor:
    """Resize a Swin V1 relative position bias table ``((2Wh-1)*(2Ww-1), heads)`` to another
    window size with bicubic interpolation (as the official Swin fine-tuning code does)."""
    if tuple(old_ws) == tuple(new_ws):
        return table
    heads = table.shape[1]
    old = (2 * old_ws[0] - 1, 2 * old_ws[1] - 1)
    new = (2 * new_ws[0] - 1, 2 * new_ws[1] - 1)
    grid = table.T.reshape(1, heads, *old).float()
    grid = F.interpolate(grid, size=new, mode="bicubic", align_corners=False)
    return grid.reshape(heads, -1).T.contiguous().to(table.dtype)


def relative_position_index(ws: tuple[int, int]) -> torch.Tensor:
    """``(Wh*Ww, Wh*Ww)`` index into a ``(2Wh-1)*(2Ww-1)`` table of relative offsets."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws[0]), torch.arange(ws[1]), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (N, N, 2)
    return (rel[..., 0] + ws[0] - 1) * (2 * ws[1] - 1) + (rel[..., 1] + ws[1] - 1)


def log_spaced_coords(ws: tuple[int, int], pretrained_ws: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Swin V2 relative coordinates ``(2Wh-1, 2Ww-1, 2)``, normalised to [-8, 8] by the
    (pretrained) window size and mapped by ``sign(x) * log2(1 + |x|) / log2(8)``."""
    dh = torch.arange(-(ws[0] - 1), ws[0], dtype=torch.float32)
    dw = torch.arange(-(ws[1] - 1), ws[1], dtype=torch.float32)
    table = torch.stack(torch.meshgrid(dh, dw, indexing="ij"), dim=-1)  # (2Wh-1, 2Ww-1, 2)
    norm = pretrained_ws if pretrained_ws[0] > 0 else ws
    if norm[0] > 1:
        table[..., 0] /= norm[0] - 1
    if norm[1] > 1:
        table[..., 1] /= norm[1] - 1
    table = table * 8
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)


class RelativePositionBias(nn.Module):
    """Swin V1: a learned table of per-head biases, one per relative offset in a window."""

    def __init__(self, window_size: tuple[int, int], num_heads: int):
        super().__init__()
        self.window_size = tuple(window_size)
        n = window_size[0] * window_size[1]
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size[0] - 1) * (2 * window_size[1] - 1), num_heads)
        )
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("index", relative_position_index(self.window_size).view(-1), persistent=False)
        self.n = n

    def forward(self) -> torch.Tensor:
        """``(heads, N, N)`` bias for one window."""
        return self.relative_position_bias_table[self.index].view(self.n, self.n, -1).permute(2, 0, 1)


class ContinuousPositionBias(nn.Module):
    """Swin V2: a small MLP over log-spaced relative coordinates, ``16 * sigmoid(mlp(coords))``.

    The coordinate table depends only on the window size (and the pre-training window size
    it is normalised by), so it is a non-persistent buffer, regenerated when a model is
    built at a new window size; the MLP weights transfer unchanged.
    """

    def __init__(
        self, window_size: tuple[int, int], num_heads: int, pretrained_window_size: tuple[int, int] = (0, 0)
    ):
        super().__init__()
        self.window_size = tuple(window_size)
        self.n = window_size[0] * window_size[1]
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 512), nn.ReLU(inplace=True), nn.Linear(512, num_heads, bias=False))
        coords = log_spaced_coords(self.window_size, tuple(pretrained_window_size)).view(-1, 2)
        self.register_buffer("coords", coords, persistent=False)
        self.register_buffer("index", relative_position_index(self.window_size).view(-1), persistent=False)

    def forward(self) -> torch.Tensor:
        """``(heads, N, N)`` bias for one window."""
        table = self.cpb_mlp(self.coords)  # ((2Wh-1)*(2Ww-1), heads)
        bias = table[self.index].view(self.n, self.n, -1).permute(2, 0, 1)
        return 16 * torch.sigmoid(bias)
