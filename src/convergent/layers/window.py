"""Swin window partition / reverse and the shifted-window attention mask.

Windows keep the batch dimension separate, ``(B, num_windows, ws*ws, C)``, so per-window
biases broadcast over the batch inside SDPA.
"""

import torch


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """``(B, H, W, C)`` → ``(B, num_windows, ws*ws, C)``; H and W must be multiples of ``ws``."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).transpose(2, 3)  # (B, H/ws, W/ws, ws, ws, C)
    return x.reshape(b, (h // ws) * (w // ws), ws * ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """``(B, num_windows, ws*ws, C)`` → ``(B, H, W, C)``."""
    b, _, _, c = windows.shape
    x = windows.view(b, h // ws, w // ws, ws, ws, c).transpose(2, 3)  # (B, H/ws, ws, W/ws, ws, C)
    return x.reshape(b, h, w, c)


def shift_attn_mask(h: int, w: int, ws: int, shift: int, device=None) -> torch.Tensor:
    """Additive mask ``(num_windows, 1, ws*ws, ws*ws)`` for shifted windows: 0 inside a region,
    -100 across regions (the value of the official implementation).

    After a cyclic shift by ``shift`` each axis holds three regions,
    ``[0, L-ws)``, ``[L-ws, L-shift)``, ``[L-shift, L)``; tokens only attend within theirs.
    """
    hi = torch.arange(h, device=device)
    wi = torch.arange(w, device=device)
    h_region = (hi >= h - ws).long() + (hi >= h - shift).long()
    w_region = (wi >= w - ws).long() + (wi >= w - shift).long()
    region = (h_region[:, None] * 3 + w_region[None, :]).float()  # (H, W)
    regions = window_partition(region[None, :, :, None], ws)[0, :, :, 0]  # (nW, ws*ws)
    differs = regions[:, :, None] != regions[:, None, :]  # (nW, N, N)
    return torch.zeros(differs.shape, device=device).masked_fill(differs, -100.0)[:, None]
