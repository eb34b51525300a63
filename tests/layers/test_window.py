"""``layers/window.py``: window partition against an index-by-index reference and its round trip
through ``window_reverse``; the shifted-window mask against one written out by hand for a 4x4
grid and against the official Swin construction (``img_mask`` slices) on a non-square grid."""

import pytest
import torch

from convergent.layers.window import shift_attn_mask, window_partition, window_reverse

X = -100.0  # the official value between regions


def official_shift_mask(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    """Swin's ``SwinTransformerBlock.__init__``: number the 3x3 regions of the shifted image by
    slices, partition, -100 where two tokens' regions differ. ``(nW, N, N)``."""
    img = torch.zeros(h, w)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[hs, wsl] = cnt
            cnt += 1
    windows = [img[i : i + ws, j : j + ws].flatten() for i in range(0, h, ws) for j in range(0, w, ws)]
    return torch.stack([torch.where(r[:, None] == r[None, :], 0.0, X) for r in windows])


def test_partition_matches_reference_and_reverses():
    """(B, H, W, C) = (2, 4, 6, 3), ws = 2: windows row-major over the grid, tokens row-major inside."""
    x = torch.randn(2, 4, 6, 3)
    windows = window_partition(x, 2)
    assert windows.shape == (2, 6, 4, 3)
    for b in range(2):
        for wi in range(2):
            for wj in range(3):
                for r in range(2):
                    for c in range(2):
                        assert torch.equal(windows[b, wi * 3 + wj, r * 2 + c], x[b, wi * 2 + r, wj * 2 + c])
    assert torch.equal(window_reverse(windows, 2, 4, 6), x)
    y = torch.randn(1, 6, 9, 5)
    assert torch.equal(window_reverse(window_partition(y, 3), 3, 6, 9), y)


def test_shift_mask_by_hand_on_a_4x4_grid():
    """ws = 2, shift = 1. Along each axis positions 0-1 are region 0, position 2 region 1,
    position 3 region 2 (region id = 3·row region + column region)."""
    mask = shift_attn_mask(4, 4, 2, 1)
    assert mask.shape == (4, 1, 4, 4)
    want = torch.tensor([
        # window (0, 0): tokens (0,0) (0,1) (1,0) (1,1), all region 0
        [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
        # window (0, 1): (0,2) (0,3) (1,2) (1,3) -> regions 1 2 1 2
        [[0, X, 0, X], [X, 0, X, 0], [0, X, 0, X], [X, 0, X, 0]],
        # window (1, 0): (2,0) (2,1) (3,0) (3,1) -> regions 3 3 6 6
        [[0, 0, X, X], [0, 0, X, X], [X, X, 0, 0], [X, X, 0, 0]],
        # window (1, 1): (2,2) (2,3) (3,2) (3,3) -> regions 4 5 7 8
        [[0, X, X, X], [X, 0, X, X], [X, X, 0, X], [X, X, X, 0]],
    ])  # fmt: skip
    assert torch.equal(mask[:, 0], want)


@pytest.mark.parametrize("h, w, ws, shift", [(6, 9, 3, 1), (8, 8, 4, 2), (4, 8, 4, 3)])
def test_shift_mask_matches_the_official_construction(h, w, ws, shift):
    mask = shift_attn_mask(h, w, ws, shift)
    assert mask.shape == ((h // ws) * (w // ws), 1, ws * ws, ws * ws)
    assert torch.equal(mask[:, 0], official_shift_mask(h, w, ws, shift))


def test_unshifted_windows_need_no_mask():
    assert torch.equal(shift_attn_mask(6, 6, 3, 0), torch.zeros(4, 1, 9, 9))
