"""Photometric augmentation: each batched op against a per-image reference written from
torchvision's formulas (hue through Python's ``colorsys``), with the parameters the batch drew;
draws are reproducible, in range, and nothing is drawn when a view has no augmentation."""

import colorsys
import math

import pytest
import torch
import torch.nn.functional as F

from convergent.data.color import ViewAugment, blur_kernel_size, gaussian_blur, hsv_to_rgb, rgb_to_hsv

S = 12


def images(n=5, c=3, seed=0) -> torch.Tensor:
    """float 0..255, with some saturated and some grey pixels."""
    x = torch.randint(0, 256, (n, c, S, S), generator=torch.Generator().manual_seed(seed)).float()
    x[:, :, 0, :3] = 255.0
    x[:, :, 1, :3] = 77.0  # grey: r = g = b
    return x


# --- the per-image reference, on one image in [0, 1] ---------------------------------------------


def gray_ref(img: torch.Tensor) -> torch.Tensor:
    if img.shape[0] == 1:
        return img
    return (0.2989 * img[0] + 0.587 * img[1] + 0.114 * img[2])[None]


def hue_ref(img: torch.Tensor, shift: float) -> torch.Tensor:
    if img.shape[0] == 1:
        return img
    out = torch.empty_like(img, dtype=torch.float64)
    for i in range(img.shape[1]):
        for j in range(img.shape[2]):
            h, s, v = colorsys.rgb_to_hsv(*img[:, i, j].double().tolist())
            out[:, i, j] = torch.tensor(colorsys.hsv_to_rgb((h + shift) % 1.0, s, v))
    return out.float()


def jitter_ref(img: torch.Tensor, op: int, f: float) -> torch.Tensor:
    if op == 0:  # brightness
        return (f * img).clamp(0, 1)
    if op == 1:  # contrast: blend with the mean of the grayscale image
        return (f * img + (1 - f) * gray_ref(img).mean()).clamp(0, 1)
    if op == 2:  # saturation: blend with the grayscale image
        return img if img.shape[0] == 1 else (f * img + (1 - f) * gray_ref(img)).clamp(0, 1)
    return hue_ref(img, f)


def blur_ref(img: torch.Tensor, sigma: float, k: int) -> torch.Tensor:
    """torchvision's GaussianBlur: a 2-D kernel (outer product of the 1-D one), reflect padding."""
    t = [i - k // 2 for i in range(k)]
    w = torch.tensor([math.exp(-0.5 * (v / sigma) ** 2) for v in t])
    w = w / w.sum()
    kernel = torch.outer(w, w)[None, None].expand(img.shape[0], 1, k, k)
    padded = F.pad(img[None], [k // 2] * 4, mode="reflect")
    return F.conv2d(padded, kernel, groups=img.shape[0])[0]


def reference(aug: ViewAugment, x: torch.Tensor, p: dict) -> torch.Tensor:
    """``aug.apply(x, p)`` one image at a time."""
    out = []
    for b in range(x.shape[0]):
        img = x[b] / 255
        if "jitter" in p and p["jitter"][b]:
            for op in p["order"][b].tolist():
                if aug.color_jitter[op] > 0:
                    img = jitter_ref(img, op, p["factors"][b, op].item())
        if "gray" in p and p["gray"][b]:
            img = gray_ref(img).expand_as(img)
        if "blur" in p and p["blur"][b]:
            img = blur_ref(img, p["sigma"][b].item(), blur_kernel_size(S))
        if "solarize" in p and p["solarize"][b]:
            img = torch.where(img >= 128 / 255, 1 - img, img)
        out.append(img * 255)
    return torch.stack(out)


@pytest.mark.parametrize(
    "kw",
    [
        dict(color_jitter=(0.4, 0.0, 0.0, 0.0), color_jitter_prob=0.7),
        dict(color_jitter=(0.0, 0.6, 0.0, 0.0), color_jitter_prob=0.7),
        dict(color_jitter=(0.0, 0.0, 0.8, 0.0), color_jitter_prob=0.7),
        dict(color_jitter=(0.0, 0.0, 0.0, 0.3), color_jitter_prob=0.7),
        dict(color_jitter=(0.4, 0.4, 0.2, 0.1), color_jitter_prob=1.0),  # all four, random orders
        dict(grayscale_prob=0.5),
        dict(blur_prob=0.6, blur_sigma=(0.1, 2.0)),
        dict(solarize_prob=0.5),
        dict(color_jitter=(0.4, 0.4, 0.2, 0.1), color_jitter_prob=0.8, grayscale_prob=0.2, blur_prob=0.5,
             solarize_prob=0.2),  # fmt: skip
    ],
)
@pytest.mark.parametrize("channels", [3, 1])
def test_ops_match_per_image_reference(kw, channels):
    aug = ViewAugment(**kw)
    x = images(n=8, c=channels)
    p = aug.draw(8, torch.Generator().manual_seed(1))
    got = aug.apply(x, p)
    assert got.shape == x.shape and got.min() >= 0 and got.max() <= 255
    torch.testing.assert_close(got, reference(aug, x, p), atol=2e-3, rtol=0)
    picked = next(p[k] for k in ("jitter", "gray", "blur", "solarize") if k in p)
    assert picked.any() and (picked.all() or kw.get("color_jitter_prob", 0) < 1)  # the draws pick some images
    assert channels == 1 or not torch.equal(got, x)  # one channel: saturation, hue, grayscale do nothing


def test_every_order_and_factor_range():
    aug = ViewAugment(color_jitter=(0.4, 0.3, 1.5, 0.1), color_jitter_prob=0.8)
    p = aug.draw(4000, torch.Generator().manual_seed(0))
    orders = {tuple(o) for o in p["order"].tolist()}
    assert len(orders) == 24 and all(sorted(o) == [0, 1, 2, 3] for o in orders)
    f = p["factors"]
    lo, hi = torch.tensor([0.6, 0.7, 0.0, -0.1]), torch.tensor([1.4, 1.3, 2.5, 0.1])  # max(0, 1 - 1.5) = 0
    assert (f >= lo).all() and (f <= hi).all() and ((f - lo) / (hi - lo)).mean(0).sub(0.5).abs().max() < 0.02
    assert abs(p["jitter"].float().mean() - 0.8) < 0.02


def test_hsv_round_trip_and_colorsys():
    x = images(n=3)
    h, s, v = rgb_to_hsv(x)
    torch.testing.assert_close(hsv_to_rgb(h, s, v), x, atol=1e-3, rtol=0)
    r, g, b = (x[0, :, 2, 5] / 255).tolist()
    want = colorsys.rgb_to_hsv(r, g, b)
    got = (h[0, 2, 5].item(), s[0, 2, 5].item(), v[0, 2, 5].item() / 255)
    assert all(math.isclose(a, b, abs_tol=1e-5) for a, b in zip(got, want))


def test_blur_kernel_size_and_constant_image():
    assert [blur_kernel_size(s) for s in (224, 32, 16, 100, 96)] == [23, 3, 3, 11, 9]
    flat = torch.full((2, 3, 9, 9), 100.0)
    torch.testing.assert_close(gaussian_blur(flat, torch.tensor([0.5, 2.0]), 5), flat)


def test_draws_fixed_and_nothing_when_off():
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    x = images()
    assert torch.equal(ViewAugment()(x, g), x) and torch.equal(g.get_state(), state)  # nothing drawn
    strong = ViewAugment(color_jitter=(0.4, 0.4, 0.2, 0.1), color_jitter_prob=1.0, blur_prob=1.0)
    a = strong(x, g)
    after = g.get_state()
    g.set_state(state)
    assert torch.equal(strong(x, g), a) and torch.equal(g.get_state(), after)  # same draws, same output
    weak = ViewAugment(color_jitter=(0.4, 0.4, 0.2, 0.1), color_jitter_prob=1e-9, blur_prob=1e-9)
    g.set_state(state)
    weak(x, g)
    assert torch.equal(g.get_state(), after)  # the amount drawn does not depend on the outcome


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(color_jitter=(0.4, -0.1, 0.0, 0.0)), r"data.color_jitter .* >= 0 with hue in \[0, 0.5\]"),
        (dict(color_jitter=(0.4, 0.4, 0.2, 0.6)), r"data.color_jitter"),
        (dict(grayscale_prob=1.5), r"data.grayscale_prob must be in \[0, 1\], got 1.5"),
        (dict(blur_prob=-0.1), r"data.blur_prob must be in \[0, 1\]"),
        (dict(solarize_prob=2.0), r"data.solarize_prob"),
        (dict(color_jitter_prob=1.1), r"data.color_jitter_prob"),
        (dict(blur_sigma=(2.0, 0.1)), r"data.blur_sigma must be \[low, high\] with 0 < low <= high"),
        (dict(blur_sigma=(0.0, 0.1)), r"data.blur_sigma"),
    ],
)
def test_bad_values_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        ViewAugment(**kw)


def test_other_channel_counts_refused():
    aug = ViewAugment(grayscale_prob=0.5)
    with pytest.raises(ValueError, match="RGB or grayscale images, got 4 channels"):
        aug(images(c=4), torch.Generator().manual_seed(0))
