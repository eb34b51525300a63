"""``losses/reconstruction.py``: SimMIM's ``masked_l1`` and MAE's ``masked_mse`` (with and without
per-patch normalised targets) against hand-written loops, by hand on tiny inputs, with their
textbook gradients and edge masks; ``normalize_patches`` against its formula; ``patchify`` /
``unpatchify`` against an index-by-index reference and HF ``ViTMAEForPreTraining``."""

import pytest
import torch
import transformers

from convergent.losses.reconstruction import (
    local_normalize,
    masked_l1,
    masked_mse,
    normalize_patches,
    patchify,
    unpatchify,
)


def reference_masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """sum over masked pixels and channels of |pred - target|, / (masked pixels + 1e-5) / C, by loops.
    pred, target (B, C, H, W); mask (B, H, W)."""
    p, t, m = pred.tolist(), target.tolist(), mask.tolist()
    b, c, h, w = pred.shape
    total, count = 0.0, 0.0
    for i in range(b):
        for y in range(h):
            for x in range(w):
                if m[i][y][x]:
                    count += 1
                    total += sum(abs(p[i][ch][y][x] - t[i][ch][y][x]) for ch in range(c))
    return total / (count + 1e-5) / c


def reference_normalized(patch: list[float], eps: float) -> list[float]:
    """(x - mean) / sqrt(unbiased variance + eps) of one patch."""
    mean = sum(patch) / len(patch)
    var = sum((x - mean) ** 2 for x in patch) / (len(patch) - 1)
    return [(x - mean) / (var + eps) ** 0.5 for x in patch]


def reference_masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool) -> float:
    """Mean over hidden patches of the patch's mean squared error, by loops. (B, N, P) / (B, N)."""
    total, count = 0.0, 0
    for pb, tb, mb in zip(pred.tolist(), target.tolist(), mask.tolist()):
        for p, t, hidden in zip(pb, tb, mb):
            if hidden:
                t = reference_normalized(t, 1e-6) if norm_pix else t
                total += sum((a - b) ** 2 for a, b in zip(p, t)) / len(p)
                count += 1
    return total / count


def reference_patchify(images: torch.Tensor, p: int) -> torch.Tensor:
    """out[b, i·(W/p) + j, (r·p + c)·C + ch] = images[b, ch, i·p + r, j·p + c], element by element."""
    b, ch, h, w = images.shape
    out = torch.empty(b, (h // p) * (w // p), p * p * ch)
    for n in range(b):
        for i in range(h // p):
            for j in range(w // p):
                for r in range(p):
                    for c in range(p):
                        for k in range(ch):
                            out[n, i * (w // p) + j, (r * p + c) * ch + k] = images[n, k, i * p + r, j * p + c]
    return out


# --- masked_l1 (SimMIM) -------------------------------------------------------------------------


def test_masked_l1_by_hand():
    pred = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[-1.0, 0.0], [0.0, 0.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])  # pixels (0,0) and (1,1)
    # |errors| on masked pixels: channel 0: 1 + 4, channel 1: 1 + 0 -> 6 / 2 pixels / 2 channels
    assert masked_l1(pred, target, mask).item() == pytest.approx(6 / (2 + 1e-5) / 2)
    assert masked_l1(pred, target, mask[:, 0]).item() == pytest.approx(6 / (2 + 1e-5) / 2)


def test_masked_l1_matches_reference_and_its_gradient():
    pred, target = torch.randn(2, 3, 8, 8, requires_grad=True), torch.randn(2, 3, 8, 8)
    mask = torch.rand(2, 8, 8) < 0.4  # (B, H, W) bool
    loss = masked_l1(pred, target, mask)
    assert loss.item() == pytest.approx(reference_masked_l1(pred.detach(), target, mask), abs=1e-6, rel=1e-6)
    torch.testing.assert_close(masked_l1(pred, target, mask[:, None].float()), loss)  # (B, 1, H, W) float mask
    loss.backward()
    # d/dpred = sign(pred - target) · mask / (masked pixels + 1e-5) / C
    want = (pred.detach() - target).sign() * mask[:, None] / (mask.sum() + 1e-5) / 3
    torch.testing.assert_close(pred.grad, want, atol=1e-9, rtol=1e-6)


def test_masked_l1_edge_masks():
    pred, target = torch.randn(2, 3, 4, 4, requires_grad=True), torch.randn(2, 3, 4, 4)
    nothing = torch.zeros(2, 4, 4, dtype=torch.bool)
    loss = masked_l1(pred, target, nothing)  # nothing masked: 0 / 1e-5, no NaN
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(pred.grad, torch.zeros_like(pred))
    everything = torch.ones(2, 4, 4, dtype=torch.bool)  # the plain mean, up to the 1e-5
    mean = (pred.detach() - target).abs().mean()
    assert masked_l1(pred, target, everything).item() == pytest.approx(mean.item() * 32 / (32 + 1e-5), rel=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        masked_l1(pred, target[:, :2], everything)


# --- masked_mse (MAE) ---------------------------------------------------------------------------


def test_masked_mse_by_hand():
    pred = torch.zeros(1, 2, 4)
    target = torch.tensor([[[1.0, 1.0, 1.0, 1.0], [0.0, 2.0, 0.0, 2.0]]])
    mask = torch.tensor([[False, True]])
    assert masked_mse(pred, target, mask, norm_pix=False).item() == pytest.approx(2.0)  # (0+4+0+4)/4
    # normalised target of patch 1: mean 1, unbiased var 4/3 -> values ±1/sqrt(4/3 + eps), squares 0.75
    assert masked_mse(pred, target, mask, norm_pix=True).item() == pytest.approx(1 / (4 / 3 + 1e-6), rel=1e-6)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_masked_mse_matches_reference(norm_pix):
    pred, target = torch.randn(3, 10, 12), torch.randn(3, 10, 12) * 2 + 0.5  # (B, N, p²·C)
    mask = torch.rand(3, 10) < 0.75
    got = masked_mse(pred, target, mask, norm_pix=norm_pix).item()
    assert got == pytest.approx(reference_masked_mse(pred, target, mask, norm_pix), abs=1e-6, rel=1e-6)
    # every patch hidden: the plain mean over patches
    everything = torch.ones(3, 10, dtype=torch.bool)
    want = reference_masked_mse(pred, target, everything, norm_pix)
    assert masked_mse(pred, target, everything.float(), norm_pix=norm_pix).item() == pytest.approx(want, rel=1e-6)


def test_masked_mse_with_nothing_masked_is_zero():
    """MAE at mask_ratio 0 hides no patch: a loss of 0 with zero gradients, not 0 / 0."""
    pred, target = torch.randn(2, 6, 8, requires_grad=True), torch.randn(2, 6, 8)
    loss = masked_mse(pred, target, torch.zeros(2, 6, dtype=torch.bool), norm_pix=True)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(pred.grad, torch.zeros_like(pred))


def test_masked_mse_gradient():
    pred, target = torch.randn(2, 6, 8, requires_grad=True), torch.randn(2, 6, 8)
    mask = torch.tensor([[1, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 0]], dtype=torch.bool)
    masked_mse(pred, target, mask, norm_pix=False).backward()
    # d/dpred = 2 (pred - target) / P at hidden patches, / number of hidden patches; 0 elsewhere
    want = 2 * (pred.detach() - target) / 8 * mask[..., None] / 5
    torch.testing.assert_close(pred.grad, want, atol=1e-9, rtol=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        masked_mse(pred, target[:, :5], mask)


def test_normalize_patches_formula():
    x = torch.randn(2, 5, 12) * 3 + 1
    want = torch.tensor([[reference_normalized(p, 1e-2) for p in row] for row in x.tolist()])
    torch.testing.assert_close(normalize_patches(x, eps=1e-2), want, atol=1e-6, rtol=1e-6)


# --- patchify / unpatchify ----------------------------------------------------------------------


def test_patchify_matches_hf():
    cfg = transformers.ViTMAEConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, decoder_hidden_size=16, decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2, decoder_intermediate_size=32,
    )  # fmt: skip
    hm = transformers.ViTMAEForPreTraining(cfg)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(patchify(x, 8), hm.patchify(x))
    p = torch.randn(2, 16, 192)
    assert torch.equal(unpatchify(p, 8), hm.unpatchify(p))
    assert torch.equal(unpatchify(patchify(x, 8), 8), x)
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        patchify(torch.randn(1, 3, 30, 32), 8)


def test_patchify_order_on_a_non_square_image():
    """(B, C, H, W) = (2, 2, 6, 9), p = 3: a 2x3 grid of 3·3·2 values."""
    x = torch.randn(2, 2, 6, 9)
    patches = patchify(x, 3)
    assert torch.equal(patches, reference_patchify(x, 3))
    assert torch.equal(unpatchify(patches, 3, grid=(2, 3), channels=2), x)
    with pytest.raises(ValueError, match="do not fit"):
        unpatchify(patches, 3, grid=(3, 2), channels=3)


# --- local_normalize (SimMIM's normalised target) -----------------------------------------------


def reference_local_normalize(images: torch.Tensor, window: int, eps: float = 1e-6) -> torch.Tensor:
    """The official ``norm_targets``, pixel by pixel: the pixels of the window centred on (y, x)
    that lie inside the image; their mean and unbiased variance (clamped at 0)."""
    b, c, h, w = images.shape
    v, r = images.tolist(), window // 2
    out = torch.empty(b, c, h, w, dtype=torch.float64)
    for i in range(b):
        for ch in range(c):
            for y in range(h):
                for x in range(w):
                    near = [v[i][ch][yy][xx] for yy in range(max(0, y - r), min(h, y + r + 1))
                            for xx in range(max(0, x - r), min(w, x + r + 1))]  # fmt: skip
                    mean = sum(near) / len(near)
                    var = max(sum((q - mean) ** 2 for q in near) / (len(near) - 1), 0.0)
                    out[i, ch, y, x] = (v[i][ch][y][x] - mean) / (var + eps) ** 0.5
    return out


@pytest.mark.parametrize("window", [3, 5, 9])
def test_local_normalize_matches_the_official_construction(window):
    torch.manual_seed(window)
    images = torch.randn(2, 2, 7, 6) * 2 + 0.5
    got = local_normalize(images, window)
    assert (got.double() - reference_local_normalize(images, window)).abs().max() <= 1e-5
    # a window as large as the image: every pixel sees (nearly) the whole image, so the centre is the global z-score
    big = local_normalize(images, 13)[:, :, 3, 3]
    flat = images.flatten(2)
    z = (images[:, :, 3, 3] - flat.mean(-1)) / (flat.var(-1) + 1e-6).sqrt()
    assert torch.allclose(big, z, atol=1e-5)


def test_local_normalize_refuses_even_or_tiny_windows():
    for bad in (1, 4, 0):
        with pytest.raises(ValueError, match=f"odd window of at least 3 pixels, got {bad}"):
            local_normalize(torch.zeros(1, 1, 4, 4), bad)
