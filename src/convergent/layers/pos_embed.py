"""Position information: ViT absolute embeddings (with resizing; learned, or the fixed 2-D
sin-cos table of MoCo v3 / MAE), BEiT's relative position bias over a patch grid with a class
token, Swin V1 relative position bias tables, Swin V2 log-spaced continuous position bias."""

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


def sincos_pos_embed_2d(grid: int | tuple[int, int], dim: int, cls_token: bool = True) -> torch.Tensor:
    """Fixed 2-D sin-cos position embeddings ``(prefix + h*w, dim)`` as MAE's
    ``get_2d_sincos_pos_embed`` (and HF ViTMAE): per patch ``[sin(x·ω), cos(x·ω), sin(y·ω),
    cos(y·ω)]`` with x the column, y the row, ``ω_k = 10000^(-k / (dim/4))``; row-major patch
    order; a zero row first for the class token when ``cls_token``. MoCo v3's
    ``build_2d_sincos_position_embedding`` holds the same features with x and y swapped (its
    ``meshgrid`` runs over (w, h) with 'ij' indexing): the transposed code, as fixed and as good."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
    h, w = (grid, grid) if isinstance(grid, int) else tuple(grid)
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))  # (D/4,)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    ex = xs.flatten()[:, None] * omega  # (h*w, D/4)
    ey = ys.flatten()[:, None] * omega
    emb = torch.cat([ex.sin(), ex.cos(), ey.sin(), ey.cos()], dim=1)  # (h*w, D)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=emb.dtype), emb])
    return emb.float()


def interpolate_rel_pos_table(
    table: torch.Tensor, old_ws: tuple[int, int], new_ws: tuple[int, int], mode: str = "bicubic"
) -> torch.Tensor:
    """Resize a relative position bias table ``((2Wh-1)*(2Ww-1), heads)`` to another window (or
    grid) size: bicubic as the official Swin V1 fine-tuning code, or ``mode='bilinear'`` as HF
    BEiT (``align_corners=False`` both)."""
    if tuple(old_ws) == tuple(new_ws):
        return table
    heads = table.shape[1]
    old = (2 * old_ws[0] - 1, 2 * old_ws[1] - 1)
    new = (2 * new_ws[0] - 1, 2 * new_ws[1] - 1)
    grid = table.T.reshape(1, heads, *old).float()
    grid = F.interpolate(grid, size=new, mode=mode, align_corners=False)
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
        table = 16 * torch.sigmoid(self.cpb_mlp(self.coords))  # ((2Wh-1)*(2Ww-1), heads): before the N² gather
        return table[self.index].view(self.n, self.n, -1).permute(2, 0, 1)


class GridRelativePositionBias(nn.Module):
    """BEiT's relative position bias over a whole patch grid with a class token in front (BEiT's
    and feature distillation's ``use_shared_rel_pos_bias``, HF ``BeitRelativePositionBias``): a
    learned ``((2Gh-1)*(2Gw-1) + 3, heads)`` table, one row per relative offset between two patches
    and three more for class-to-patch, patch-to-class and class-to-class; zero-initialised, as BEiT.

    ``forward(grid)`` gives the ``(heads, 1 + N, 1 + N)`` bias for a patch grid: the configured one
    from a cached index; another one from the offset rows resized bilinearly (as HF BEiT's
    ``interpolate_pos_encoding``) and an index computed for it.
    """

    EXTRA = 3
    """Rows after the patch offsets: class-to-patch, patch-to-class, class-to-class."""

    def __init__(self, grid: tuple[int, int], num_heads: int):
        super().__init__()
        self.grid = tuple(grid)
        rows = (2 * self.grid[0] - 1) * (2 * self.grid[1] - 1) + self.EXTRA
        self.relative_position_bias_table = nn.Parameter(torch.zeros(rows, num_heads))
        self.register_buffer("index", self.grid_index(self.grid).view(-1), persistent=False)

    @classmethod
    def grid_index(cls, grid: tuple[int, int]) -> torch.Tensor:
        """``(1 + N, 1 + N)`` rows of the table for a grid with a class token first (row-major patches)."""
        patches = relative_position_index(grid)  # (N, N) into the (2Gh-1)*(2Gw-1) offsets
        offsets = (2 * grid[0] - 1) * (2 * grid[1] - 1)
        index = torch.zeros(patches.shape[0] + 1, patches.shape[1] + 1, dtype=patches.dtype)
        index[1:, 1:] = patches
        index[0, :] = offsets  # class to token
        index[:, 0] = offsets + 1  # token to class
        index[0, 0] = offsets + 2  # class to class
        return index

    @classmethod
    def resize_table(cls, table: torch.Tensor, old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
        """A table laid out for grid ``old`` resized to grid ``new``: the offset rows bilinearly
        (``align_corners=False``, as HF BEiT), the three class rows kept."""
        if tuple(old) == tuple(new):
            return table
        offsets = interpolate_rel_pos_table(table[: -cls.EXTRA], old, new, mode="bilinear")
        return torch.cat([offsets, table[-cls.EXTRA :]])

    def forward(self, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """``(heads, 1 + N, 1 + N)`` bias for patch grid ``grid`` (None: the configured one)."""
        grid = self.grid if grid is None else tuple(grid)
        table, index = self.relative_position_bias_table, self.index
        if grid != self.grid:
            table = self.resize_table(table, self.grid, grid)
            index = self.grid_index(grid).view(-1).to(table.device)
        n = grid[0] * grid[1] + 1
        return table[index].view(n, n, -1).permute(2, 0, 1)
