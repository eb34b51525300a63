"""``layers/pos_embed.py`` against hand-written formulas: bicubic resizing of ViT position
embeddings and Swin V1 bias tables (Keys' cubic kernel, a = -0.75, half-pixel centres, border
indices clamped: PyTorch's ``bicubic`` with ``align_corners=False``), identity when the size is
unchanged; the relative position index; Swin V2's log-spaced coordinates; the two bias modules
(table lookup, ``16·sigmoid`` of the MLP) element by element, with the table's gradient."""

import math

import pytest
import torch

from convergent.layers.pos_embed import (
    ContinuousPositionBias,
    RelativePositionBias,
    interpolate_pos_embed,
    interpolate_rel_pos_table,
    log_spaced_coords,
    relative_position_index,
)


def cubic(t: float, a: float = -0.75) -> float:
    """Keys' cubic convolution kernel."""
    t = abs(t)
    if t <= 1:
        return (a + 2) * t**3 - (a + 3) * t**2 + 1
    if t < 2:
        return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return 0.0


def bicubic_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """``(n_out, n_in)`` float64 weights of 1-d bicubic resizing: output i samples the input at
    (i + 0.5)·n_in/n_out - 0.5 from its 4 neighbours, indices clamped to the border."""
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        src = (i + 0.5) * n_in / n_out - 0.5
        f = math.floor(src)
        for o in (-1, 0, 1, 2):
            m[i, min(max(f + o, 0), n_in - 1)] += cubic(f + o - src)
    return m


def resize(grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(H, W)`` → ``size``, separable: rows then columns. (PyTorch's own kernel weights are
    fp32: its results differ from these float64 ones by up to ~1e-6 relative.)"""
    return bicubic_matrix(grid.shape[0], size[0]) @ grid.double() @ bicubic_matrix(grid.shape[1], size[1]).T


def log_spaced(d: int, length: int) -> float:
    """Swin V2's coordinate of offset d along an axis of (pretrained) window size L:
    x = 8·d/(L-1) (8·d when L = 1), mapped to sign(x)·log2(1 + |x|)/log2(8)."""
    x = 8 * d / (length - 1) if length > 1 else 8 * d
    return math.copysign(math.log2(1 + abs(x)) / 3, x)


# --- resizing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("old, new, prefix", [((3, 4), (5, 6), 1), ((4, 4), (2, 3), 0), ((2, 3), (4, 4), 2)])
def test_interpolate_pos_embed_matches_bicubic_reference(old, new, prefix):
    c = 5
    pos = torch.randn(1, prefix + old[0] * old[1], c)  # (1, prefix + Ho·Wo, C), row-major positions
    out = interpolate_pos_embed(pos, old, new, num_prefix=prefix)
    assert out.shape == (1, prefix + new[0] * new[1], c)
    assert torch.equal(out[:, :prefix], pos[:, :prefix])  # class tokens as they were
    for ch in range(c):
        want = resize(pos[0, prefix:, ch].reshape(old), new).flatten()
        torch.testing.assert_close(out[0, prefix:, ch], want.float(), atol=2e-6, rtol=2e-6)


def test_interpolate_pos_embed_identity_and_errors():
    pos = torch.randn(1, 1 + 12, 4)
    assert interpolate_pos_embed(pos, (3, 4), (3, 4)) is pos
    # a constant grid stays constant (the kernel's weights sum to 1)
    flat = torch.full((1, 1 + 12, 4), 0.7)
    torch.testing.assert_close(interpolate_pos_embed(flat, (3, 4), (7, 5)), torch.full((1, 36, 4), 0.7))
    with pytest.raises(ValueError, match="holds 12 patch positions"):
        interpolate_pos_embed(pos, (4, 4), (5, 5))


def test_interpolate_rel_pos_table_matches_bicubic_reference():
    """Window (3, 2) → (4, 3): tables (5·3, heads) → (7·5, heads), offsets row-major."""
    heads = 3
    table = torch.randn(5 * 3, heads)
    out = interpolate_rel_pos_table(table, (3, 2), (4, 3))
    assert out.shape == (7 * 5, heads) and out.is_contiguous()
    for h in range(heads):
        want = resize(table[:, h].reshape(5, 3), (7, 5)).flatten()
        torch.testing.assert_close(out[:, h], want.float(), atol=2e-6, rtol=2e-6)
    assert interpolate_rel_pos_table(table, (3, 2), (3, 2)) is table


# --- relative positions -------------------------------------------------------------------------


@pytest.mark.parametrize("ws", [(2, 2), (3, 4), (1, 3)])
def test_relative_position_index(ws):
    """Token a = (ya, xa) attending to b = (yb, xb), row-major in the window: the offset
    (ya - yb, xa - xb), shifted to start at 0, numbered row-major in a (2Wh-1, 2Ww-1) table."""
    index = relative_position_index(ws)
    tokens = [(y, x) for y in range(ws[0]) for x in range(ws[1])]
    assert index.shape == (len(tokens), len(tokens))
    for a, (ya, xa) in enumerate(tokens):
        for b, (yb, xb) in enumerate(tokens):
            assert index[a, b] == (ya - yb + ws[0] - 1) * (2 * ws[1] - 1) + (xa - xb + ws[1] - 1)
    assert index.diagonal().eq((ws[0] - 1) * (2 * ws[1] - 1) + ws[1] - 1).all()  # zero offset


@pytest.mark.parametrize("ws, pretrained", [((3, 4), (0, 0)), ((4, 4), (2, 3)), ((1, 2), (0, 0))])
def test_log_spaced_coords(ws, pretrained):
    coords = log_spaced_coords(ws, pretrained)
    norm = pretrained if pretrained[0] > 0 else ws
    assert coords.shape == (2 * ws[0] - 1, 2 * ws[1] - 1, 2)
    for i, dh in enumerate(range(-(ws[0] - 1), ws[0])):
        for j, dw in enumerate(range(-(ws[1] - 1), ws[1])):
            assert coords[i, j, 0].item() == pytest.approx(log_spaced(dh, norm[0]), abs=1e-6)
            assert coords[i, j, 1].item() == pytest.approx(log_spaced(dw, norm[1]), abs=1e-6)


def test_relative_position_bias_looks_up_its_table():
    ws, heads = (2, 3), 4
    rpb = RelativePositionBias(ws, heads)
    table = rpb.relative_position_bias_table  # (3·5, heads)
    bias = rpb()
    assert bias.shape == (heads, 6, 6)
    tokens = [(y, x) for y in range(2) for x in range(3)]
    for a, (ya, xa) in enumerate(tokens):
        for b, (yb, xb) in enumerate(tokens):
            torch.testing.assert_close(bias[:, a, b], table[(ya - yb + 1) * 5 + (xa - xb + 2)], atol=0, rtol=0)
    # gradient: each table row collects from every pair with its offset, (Wh - |dy|)·(Ww - |dx|) of them
    bias.sum().backward()
    counts = torch.tensor([[(2 - abs(dy)) * (3 - abs(dx)) for dx in range(-2, 3)] for dy in range(-1, 2)])
    assert torch.equal(table.grad, counts.flatten()[:, None].float().expand(-1, heads))
    assert "index" not in rpb.state_dict()


@pytest.mark.parametrize("pretrained", [(0, 0), (4, 4)])
def test_continuous_position_bias_is_16_sigmoid_of_the_mlp(pretrained):
    ws, heads = (3, 3), 2
    cpb = ContinuousPositionBias(ws, heads, pretrained)
    bias = cpb()
    assert bias.shape == (heads, 9, 9) and 0 < bias.min() and bias.max() < 16
    w1, b1, w2 = (p.double() for p in (cpb.cpb_mlp[0].weight, cpb.cpb_mlp[0].bias, cpb.cpb_mlp[2].weight))
    norm = pretrained if pretrained[0] > 0 else ws

    tokens = [(y, x) for y in range(3) for x in range(3)]
    for a, (ya, xa) in enumerate(tokens):
        for b, (yb, xb) in enumerate(tokens):
            c = torch.tensor([log_spaced(ya - yb, norm[0]), log_spaced(xa - xb, norm[1])], dtype=torch.float64)
            want = 16 * torch.sigmoid(w2 @ torch.relu(w1 @ c + b1))  # (heads,)
            torch.testing.assert_close(bias[:, a, b], want.float(), atol=1e-6, rtol=1e-6)
    assert set(cpb.state_dict()) == {"cpb_mlp.0.weight", "cpb_mlp.0.bias", "cpb_mlp.2.weight"}
