"""Batched transforms: reproducible from a generator, exact normalisation, crop geometry,
flips, boxes within the configured ranges; per-view photometric augmentation (the ops
themselves: tests/data/test_color.py) composed after the crop, and nothing changed without it."""

import math
from dataclasses import replace

import pytest
import torch

from convergent.config import DataConfig
from convergent.data.color import ViewAugment
from convergent.data.transforms import BatchTransform, build_transform, crop_flip, denormalize, normalize, sample_boxes

S = 16


def batch(n=6, c=3, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, S, S), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def cfg(**kw) -> DataConfig:
    return replace(DataConfig(img_size=S, mean=(0.2, 0.4, 0.6), std=(0.5, 0.25, 0.125)), **kw)


def test_deterministic_given_generator():
    t = build_transform(cfg(), train=True)
    x = batch()
    a = t(x, torch.Generator().manual_seed(7))
    b = t(x, torch.Generator().manual_seed(7))
    c = t(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    g = torch.Generator().manual_seed(3)
    state = g.get_state()  # resuming = restoring the generator state
    first = t(x, g)
    g.set_state(state)
    assert torch.equal(t(x, g), first)


def test_output_shape_dtype_range():
    c = cfg(img_size=12)
    x = batch()  # 16x16 input: resized to 12 first
    for train in (True, False):
        y = build_transform(c, train)(x, torch.Generator().manual_seed(0))
        assert y.shape == (6, 3, 12, 12) and y.dtype == torch.float32
        lo = (0 - torch.tensor(c.mean)) / torch.tensor(c.std)
        hi = (1 - torch.tensor(c.mean)) / torch.tensor(c.std)
        per_channel = y.transpose(0, 1).reshape(3, -1)
        assert (per_channel.min(1).values >= lo - 1e-5).all() and (per_channel.max(1).values <= hi + 1e-5).all()


def test_eval_is_exact_normalisation():
    x = batch()
    y = build_transform(cfg(), train=False)(x)
    mean, std = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1), torch.tensor([0.5, 0.25, 0.125]).view(1, 3, 1, 1)
    torch.testing.assert_close(y, (x.float() / 255 - mean) / std)
    torch.testing.assert_close(denormalize(y, cfg()), x.float() / 255)


def test_single_value_stats_broadcast_and_mismatch_errors():
    x = batch(c=1)
    y = build_transform(cfg(mean=(0.5,), std=(0.5,)), train=False)(x)
    torch.testing.assert_close(y, x.float() / 127.5 - 1)
    y = build_transform(DataConfig(img_size=S), train=False)(x)  # default 3 equal values on 1 channel
    torch.testing.assert_close(y, x.float() / 127.5 - 1)
    with pytest.raises(ValueError, match="data.mean has 3 values for images with 1 channels"):
        build_transform(cfg(), train=False)(x)
    with pytest.raises(TypeError, match="uint8"):
        build_transform(cfg(), train=False)(x.float())


def test_full_crop_without_flip_is_identity():
    x = batch()
    t = build_transform(cfg(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0), train=True)
    ref = build_transform(cfg(), train=False)(x)
    torch.testing.assert_close(t(x, torch.Generator().manual_seed(0)), ref, atol=1e-4, rtol=0)


def test_flip_flips():
    x = batch()
    t = build_transform(cfg(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=1.0), train=True)
    ref = build_transform(cfg(), train=False)(x)
    torch.testing.assert_close(t(x, torch.Generator().manual_seed(0)), ref.flip(-1), atol=1e-4, rtol=0)
    half = build_transform(cfg(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.5), train=True)
    x = batch(n=400)
    y = half(x, torch.Generator().manual_seed(0))
    flipped = (y - build_transform(cfg(), train=False)(x).flip(-1)).flatten(1).abs().amax(1) < 1e-4
    assert 150 < flipped.sum() < 250


def test_crop_geometry_on_a_ramp():
    """Bilinear sampling of a linear ramp is exact: output column k of box (x0, w) reads
    input position x0 + (k + 0.5) * w / S - 0.5 (pixel-centre coordinates)."""
    ramp_x = torch.arange(S, dtype=torch.float32).expand(S, S)  # value = column index
    x = torch.stack([ramp_x, ramp_x.T], 0)[None].repeat(2, 1, 1, 1)  # (2, 2, S, S): x ramp, y ramp
    boxes = torch.tensor([[4.0, 2.0, 8.0, 10.0], [4.0, 2.0, 8.0, 10.0]])
    y = crop_flip(x, boxes, torch.tensor([False, True]), S)
    k = torch.arange(S, dtype=torch.float32)
    want_x = 4 + (k + 0.5) * 8 / S - 0.5
    want_y = 2 + (k + 0.5) * 10 / S - 0.5
    torch.testing.assert_close(y[0, 0, 0], want_x)
    torch.testing.assert_close(y[0, 1, :, 0], want_y)
    torch.testing.assert_close(y[1, 0, 0], want_x.flip(0))  # mirrored within the box
    torch.testing.assert_close(y[1, 1, :, 0], want_y)


def test_boxes_respect_scale_ratio_and_bounds():
    b = sample_boxes(5000, 32, 24, (0.2, 0.6), (0.5, 2.0), torch.Generator().manual_seed(0))
    x0, y0, w, h = b.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= 24 + 1e-4).all() and (y0 + h <= 32 + 1e-4).all()
    area = w * h / (32 * 24)
    assert area.min() >= 0.2 - 1e-5 and area.max() <= 0.6 + 1e-5
    aspect = w / h
    assert aspect.min() >= 0.5 - 1e-5 and aspect.max() <= 2.0 + 1e-5
    assert math.isclose(area.mean().item(), 0.4, abs_tol=0.02)  # uniform in area
    assert x0.std() > 1 and y0.std() > 1  # positions vary
    # impossible ranges (a box wider than the image): the centre crop at the nearest aspect
    f = sample_boxes(4, 10, 40, (0.9, 1.0), (1.0, 1.0), torch.Generator().manual_seed(0))
    torch.testing.assert_close(f, torch.tensor([[15.0, 0.0, 10.0, 10.0]] * 4))


def test_bad_config():
    with pytest.raises(ValueError, match="data.scale"):
        build_transform(cfg(scale=(0.9, 0.5)), train=True)
    with pytest.raises(ValueError, match="hflip"):
        build_transform(cfg(hflip=1.5), train=True)


MOCO = dict(color_jitter=(0.4, 0.4, 0.2, 0.1), color_jitter_prob=(0.8,), grayscale_prob=(0.2,), blur_prob=(1.0, 0.1),
            solarize_prob=(0.0, 0.2))  # fmt: skip


def test_defaults_equal_the_crop_flip_transform_bit_for_bit():
    """No photometric fields set: the output, and what is drawn, are the old transform's."""
    c = cfg(scale=(0.3, 1.0))
    old = BatchTransform(c.img_size, c.mean, c.std, True, c.scale, c.ratio, c.hflip)  # crop + flip only
    new = build_transform(c, train=True)
    x = batch()
    g_old, g_new = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for view in (0, 1, 2):
        assert torch.equal(new(x, g_new, view=view), old(x, g_old))
    assert torch.equal(g_new.get_state(), g_old.get_state())


def test_views_compose_crop_then_their_own_photometric_ops():
    c = cfg(**MOCO)
    t = build_transform(c, train=True)
    views = t.views
    assert [(v.blur_prob, v.solarize_prob, v.grayscale_prob, v.color_jitter_prob) for v in views] == [
        (1.0, 0.0, 0.2, 0.8), (0.1, 0.2, 0.2, 0.8)]  # fmt: skip
    x = batch()
    for view in (0, 1, 3):  # view 3 uses the last settings
        g, ref = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
        got = t(x, g, view=view)
        boxes = sample_boxes(6, S, S, c.scale, c.ratio, ref)
        flip = torch.rand(6, generator=ref) < c.hflip
        aug = views[min(view, 1)]
        want = normalize(aug.apply(crop_flip(x.float(), boxes, flip, S), aug.draw(6, ref)), c.mean, c.std)
        assert torch.equal(got, want) and torch.equal(g.get_state(), ref.get_state())
    eval_t = build_transform(c, train=False)  # evaluation: no augmentation whatever the fields
    torch.testing.assert_close(eval_t(x, None, view=1), build_transform(cfg(), train=False)(x))


def test_photometric_views_deterministic_and_resume_exact():
    t = build_transform(cfg(**MOCO), train=True)
    x = batch()
    a, b = (t(x, torch.Generator().manual_seed(7), view=1) for _ in range(2))
    assert torch.equal(a, b) and not torch.allclose(a, t(x, torch.Generator().manual_seed(8), view=1))
    g = torch.Generator().manual_seed(3)
    t(x, g, view=0)
    state = g.get_state()  # a checkpoint between two batches
    first = (t(x, g, view=0), t(x, g, view=1))
    g.set_state(state)
    second = (t(x, g, view=0), t(x, g, view=1))
    assert all(torch.equal(p, q) for p, q in zip(first, second))
    assert not torch.equal(t(x, torch.Generator().manual_seed(3), view=0), t(x, torch.Generator().manual_seed(3), view=1))


def test_bad_photometric_config():
    for kw, match in [
        (dict(color_jitter=(0.4, 0.4, 0.2, 0.9)), "data.color_jitter"),
        (dict(blur_prob=(1.0, 1.1)), r"data.blur_prob must be in \[0, 1\], got 1.1"),
        (dict(solarize_prob=()), "data.solarize_prob needs at least one value"),
        (dict(blur_sigma=(1.0, 0.5)), "data.blur_sigma"),
    ]:
        with pytest.raises(ValueError, match=match):
            build_transform(cfg(**kw), train=True)
    with pytest.raises(ValueError, match="0-based view index"):
        build_transform(cfg(), train=True)(batch(), torch.Generator(), view=-1)
    assert isinstance(build_transform(cfg(**MOCO), train=True).views[0], ViewAugment)
