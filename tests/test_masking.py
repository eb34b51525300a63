"""Mask generators (SimMIM squares, MAE random, BEiT blocks), AvgDist, and `convergent masks`."""

import json
import math
import re

import pytest
import torch
import transformers
from transformers.models.vit_mae.modeling_vit_mae import ViTMAEEmbeddings

from convergent.cli import main
from convergent.masking import (
    SimMIMMaskGenerator,
    avg_dist,
    block_masking,
    distance_to_visible,
    mask_to_pixels,
    random_masking,
)

# --- SimMIM ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size,mask_patch,model_patch,ratio",
    [(192, 32, 4, 0.6), (224, 32, 16, 0.6), (32, 8, 4, 0.5), (64, 16, 16, 0.75), (96, 32, 4, 0.1)],
)
def test_simmim_count_and_resolution(size, mask_patch, model_patch, ratio):
    gen = SimMIMMaskGenerator(size, mask_patch, model_patch, ratio)
    masks = gen(5, generator=torch.Generator().manual_seed(0))
    squares, scale = size // mask_patch, mask_patch // model_patch
    assert masks.dtype == torch.bool and masks.shape == (5, (size // model_patch) ** 2)
    expected = math.ceil(ratio * squares**2)  # the official generator's count
    assert (masks.sum(1) == expected * scale**2).all()
    # every mask square is uniform over its scale x scale model patches (the repeat)
    blocks = masks.view(5, squares, scale, squares, scale)
    assert (blocks == blocks[:, :, :1, :, :1]).all()
    if 0 < expected < squares**2:
        assert not torch.equal(masks[0], masks[1])  # samples differ


def test_simmim_rng_reproducible():
    gen = SimMIMMaskGenerator(192, 32, 4, 0.6)
    a = gen(3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, gen(3, generator=torch.Generator().manual_seed(7)))
    torch.manual_seed(3)
    b = gen(3)
    torch.manual_seed(3)
    assert torch.equal(b, gen(3))  # the global RNG when no generator is given


def test_simmim_errors():
    with pytest.raises(ValueError, match="not a multiple of mask_patch_size"):
        SimMIMMaskGenerator(200, 32, 4, 0.6)
    with pytest.raises(ValueError, match="not a multiple of model_patch_size"):
        SimMIMMaskGenerator(192, 32, 6, 0.6)
    with pytest.raises(ValueError, match="mask_ratio"):
        SimMIMMaskGenerator(192, 32, 4, 1.5)


# --- MAE random masking ----------------------------------------------------------------------


@pytest.mark.parametrize("n,ratio", [(196, 0.75), (16, 0.75), (10, 0.6), (49, 0.5)])
def test_random_masking_equals_hf(n, ratio):
    config = transformers.ViTMAEConfig(mask_ratio=ratio, hidden_size=8)
    hf = ViTMAEEmbeddings.__new__(ViTMAEEmbeddings)
    hf.config = config  # random_masking only reads config.mask_ratio
    noise = torch.rand(3, n)
    seq = torch.randn(3, n, 8)
    ref_seq, ref_mask, ref_restore = ViTMAEEmbeddings.random_masking(hf, seq, noise=noise)
    ids_keep, mask, ids_restore = random_masking(3, n, ratio, noise=noise)
    assert mask.dtype == torch.bool
    assert torch.equal(mask.float(), ref_mask)
    assert torch.equal(ids_restore, ref_restore)
    assert torch.equal(torch.gather(seq, 1, ids_keep[..., None].expand(-1, -1, 8)), ref_seq)
    assert (mask.sum(1) == n - int(n * (1 - ratio))).all()
    # kept indices are exactly the visible patches
    visible = torch.zeros_like(mask).scatter_(1, ids_keep, True)
    assert torch.equal(visible, ~mask)


def test_random_masking_generator_and_errors():
    a = random_masking(2, 50, 0.75, generator=torch.Generator().manual_seed(1))
    b = random_masking(2, 50, 0.75, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="noise must have shape"):
        random_masking(2, 50, 0.75, noise=torch.rand(2, 49))
    with pytest.raises(ValueError, match="mask_ratio"):
        random_masking(2, 50, 1.0)


# --- BEiT block masking ----------------------------------------------------------------------


def test_block_masking_reaches_target_in_blocks():
    g = torch.Generator().manual_seed(0)
    masks = block_masking(32, 14, 0.4, generator=g)
    target = round(0.4 * 196)  # BEiT: 75-78 of 196
    counts = masks.sum(1)
    assert masks.shape == (32, 196) and masks.dtype == torch.bool
    assert (counts <= target).all()  # never more than asked
    assert counts.float().mean() >= 0.95 * target
    # blocks, not scattered patches: most masked patches have a masked 4-neighbour
    m = masks.view(32, 14, 14).float()
    nb = torch.zeros_like(m)
    nb[:, 1:] += m[:, :-1]
    nb[:, :-1] += m[:, 1:]
    nb[:, :, 1:] += m[:, :, :-1]
    nb[:, :, :-1] += m[:, :, 1:]
    assert ((nb > 0) & (m > 0)).sum() >= 0.95 * m.sum()
    again = block_masking(32, 14, 0.4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(masks, again)


def test_block_masking_is_blockier_than_random():
    g = torch.Generator().manual_seed(0)
    blocks = avg_dist(mask_to_pixels(block_masking(16, 14, 0.4, generator=g), 14, 16)).mean()
    rand = avg_dist(mask_to_pixels(random_masking(16, 196, 0.4, generator=g)[1], 14, 16)).mean()
    assert blocks > 1.3 * rand


# --- AvgDist ---------------------------------------------------------------------------------


def test_avg_dist_hand_cases():
    one = torch.zeros(5, 5, dtype=torch.bool)
    one[2, 2] = True
    assert avg_dist(one).item() == pytest.approx(1.0)
    block = torch.zeros(5, 5, dtype=torch.bool)
    block[1:4, 1:4] = True  # 8 border pixels at distance 1, the centre at 2
    assert avg_dist(block).item() == pytest.approx(10 / 9, abs=1e-6)
    left = torch.zeros(4, 5, dtype=torch.bool)
    left[:, :2] = True  # columns at distance 2 and 1
    assert avg_dist(left).item() == pytest.approx(1.5)
    corner = torch.ones(3, 3, dtype=torch.bool)
    corner[2, 2] = False  # distances: 1, 1, sqrt2, 2, sqrt5, sqrt5, 2sqrt2, 2
    d = distance_to_visible(corner)
    assert d[0, 0].item() == pytest.approx(math.sqrt(8)) and d[0, 1].item() == pytest.approx(math.sqrt(5))
    expected = (1 + 1 + math.sqrt(2) + 2 + 2 * math.sqrt(5) + math.sqrt(8) + 2) / 8
    assert avg_dist(corner).item() == pytest.approx(expected, abs=1e-6)
    batch = avg_dist(torch.stack([one, block]))
    assert batch.shape == (2,) and batch[1].item() == pytest.approx(10 / 9, abs=1e-6)
    assert math.isinf(avg_dist(torch.ones(3, 3, dtype=torch.bool)).item())  # nothing visible
    assert math.isnan(avg_dist(torch.zeros(3, 3, dtype=torch.bool)).item())  # nothing masked


def test_distance_transform_is_exact():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(6, 19, 23, generator=g) < torch.linspace(0.1, 0.95, 6)[:, None, None]
    d = distance_to_visible(masks)
    coords = torch.stack(torch.meshgrid(torch.arange(19.0), torch.arange(23.0), indexing="ij"), -1).view(-1, 2)
    for m, got in zip(masks, d):
        visible = coords[~m.view(-1)]
        ref = torch.cdist(coords, visible).amin(1).view(19, 23)  # brute force over all pairs
        assert torch.allclose(got, ref, atol=1e-5)


def test_avg_dist_grows_with_patch_size():
    g = torch.Generator().manual_seed(0)
    values = []
    for patch in (4, 8, 16, 32, 64):
        masks = SimMIMMaskGenerator(192, patch, patch, 0.6)(16, generator=g)
        values.append(avg_dist(mask_to_pixels(masks, 192 // patch, patch)).mean().item())
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_mask_to_pixels():
    mask = torch.tensor([[True, False, False, True]])
    px = mask_to_pixels(mask, 2, 3)
    assert px.shape == (1, 6, 6)
    assert px[0, :3, :3].all() and not px[0, :3, 3:].any() and not px[0, 3:, :3].any() and px[0, 3:, 3:].all()
    assert mask_to_pixels(mask[0], (1, 4), 2).shape == (2, 8)
    with pytest.raises(ValueError, match="3x3 grid"):
        mask_to_pixels(mask, 3, 2)


# --- CLI -------------------------------------------------------------------------------------


def test_cli_masks_prints_avgdist_and_writes_png(tmp_path, capsys):
    out = tmp_path / "m.png"
    argv = ["masks", "--strategy", "simmim", "--patch", "32", "--img_size", "192", "--ratio", "0.6"]
    assert main([*argv, "--samples", "6", "--seed", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    value = float(re.search(r"AvgDist ([0-9.]+) px", text).group(1))
    # the same masks, drawn directly, give the printed value
    masks = SimMIMMaskGenerator(192, 32, 32, 0.6)(6, generator=torch.Generator().manual_seed(3))
    assert value == pytest.approx(avg_dist(mask_to_pixels(masks, 6, 32)).mean().item(), abs=0.006)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 1000


@pytest.mark.parametrize("strategy", ["random", "block"])
def test_cli_masks_other_strategies(tmp_path, capsys, strategy):
    out = tmp_path / f"{strategy}.png"
    assert main(["masks", "--strategy", strategy, "--img_size", "64", "--samples", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"strategy={strategy}" in text and "AvgDist" in text and out.exists()


def test_cli_masks_bad_sizes(capsys):
    assert main(["masks", "--img_size", "100", "--patch", "32", "--out", ""]) == 2
    assert "--img_size 100 is not a multiple of --patch 32" in capsys.readouterr().err
    assert main(["masks", "--strategy", "random", "--model_patch", "4", "--out", ""]) == 2
    assert "--model_patch applies only" in capsys.readouterr().err


def test_cli_masks_sweep_table_json_and_png(tmp_path, capsys):
    out, js = tmp_path / "sweep.png", tmp_path / "sweep.json"
    argv = ["masks", "--sweep", "--img_size", "32", "--patches", "4", "8", "16", "--ratios", "0.3", "0.6", "0.9",
            "--model_patch", "4", "--samples", "5", "--seed", "1", "--out", str(out), "--json", str(js)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    rows = json.loads(js.read_text())
    assert [(r["patch"], r["ratio"]) for r in rows] == [(p, r) for p in (4, 8, 16) for r in (0.3, 0.6, 0.9)]
    for r in rows[:6]:  # each entry is the AvgDist of the masks drawn with the same seed
        masks = SimMIMMaskGenerator(32, r["patch"], 4, r["ratio"])(5, generator=torch.Generator().manual_seed(1))
        assert r["avg_dist"] == pytest.approx(avg_dist(mask_to_pixels(masks, 8, 4)).mean().item(), abs=2e-3)
    # larger squares and higher ratios put masked pixels farther from visible ones
    by = {(r["patch"], r["ratio"]): r["avg_dist"] for r in rows}
    assert by[(4, 0.3)] < by[(4, 0.6)] < by[(4, 0.9)] and by[(4, 0.6)] < by[(8, 0.6)]
    assert by[(16, 0.9)] is None and "all: some masks hide the whole image" in text  # 16-px squares at 90 %: all 4
    assert re.search(r"^\s+8\s+[0-9.]+\s+[0-9.]+\s+[0-9.]+$", text, re.M)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_masks_sweep_bad_input(capsys):
    assert main(["masks", "--sweep", "--img_size", "32", "--patches", "5", "--out", ""]) == 2
    assert "--patches [5]: each must be a positive divisor of --img_size 32" in capsys.readouterr().err
    assert main(["masks", "--sweep", "--img_size", "32", "--ratios", "1.0", "--out", ""]) == 2
    assert "--ratios [1.0]: each must be in (0, 1)" in capsys.readouterr().err
    assert main(["masks", "--sweep", "--patch", "8", "--out", ""]) == 2
    assert "--sweep takes --patches and --ratios" in capsys.readouterr().err
    assert main(["masks", "--ratios", "0.5", "--out", ""]) == 2
    assert "apply only with --sweep" in capsys.readouterr().err
