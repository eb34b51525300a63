"""Official Swin / Swin V2 checkpoint layout → convergent: config inference and weights.

The official layout is rebuilt here independently of our modules: key names as in
microsoft/Swin-Transformer, and its persistent buffers (``attn_mask`` from the slice-based
region labelling, ``relative_position_index``, V2's ``relative_coords_table``) computed the
way that code computes them.
"""

import math

import pytest
import torch

from convergent.backbones import build_backbone
from convergent.backbones.swin import stage_grids, stage_windows
from convergent.converters.official_swin import config_from_official, ignored_keys, state_dict_from_official
from tests.conftest import randomize_


def official_mask(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = img.view(1, h // ws, ws, w // ws, ws, 1).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws)
    m = win.unsqueeze(1) - win.unsqueeze(2)
    return m.masked_fill(m != 0, -100.0).masked_fill(m == 0, 0.0)


def official_coords_table(ws: int, pws: int) -> torch.Tensor:
    r = torch.arange(-(ws - 1), ws, dtype=torch.float32)
    t = torch.stack(torch.meshgrid([r, r], indexing="ij")).permute(1, 2, 0).unsqueeze(0).clone()
    t /= (pws - 1) if pws > 0 else (ws - 1)
    t *= 8
    return torch.sign(t) * torch.log2(t.abs() + 1.0) / math.log2(8)


def to_official(model) -> dict:
    """Our state dict written in the official layout, with its buffers and a head."""
    cfg = model.config
    sd = {}
    for k, v in model.state_dict().items():
        if k == "mask_token":
            continue
        k = k.replace("rel_pos.relative_position_bias_table", "attn.relative_position_bias_table")
        sd[k.replace("rel_pos.cpb_mlp.", "attn.cpb_mlp.")] = v.clone()
    for i, (grid, ws) in enumerate(zip(stage_grids(cfg), stage_windows(cfg))):
        for j in range(cfg.depths[i]):
            p = f"layers.{i}.blocks.{j}."
            sd[p + "attn.relative_position_index"] = torch.zeros(ws * ws, ws * ws, dtype=torch.long)
            if cfg.version == 2:
                sd[p + "attn.relative_coords_table"] = official_coords_table(ws, cfg.pretrained_window_sizes[i])
            if j % 2 == 1 and min(grid) > ws:
                sd[p + "attn_mask"] = official_mask(*grid, ws, ws // 2)
    sd["head.weight"] = torch.zeros(10, model.num_features)
    sd["head.bias"] = torch.zeros(10)
    return {"model": sd}


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("swin_test", dict(img_size=64, window_size=4, ape=True)),
        ("swinv2_test", dict(img_size=64, window_size=4)),
        ("swinv2_test", dict(img_size=64, window_size=4, pretrained_window_sizes=(3, 2), qkv_bias=False)),
    ],
)
def test_official_checkpoint_converts(name, overrides):
    model = randomize_(build_backbone(name, drop_path=0.0, **overrides), std=0.05).eval()
    ckpt = to_official(model)
    cfg = config_from_official(ckpt)
    assert cfg == model.config.__class__(**{**vars(model.config), "drop_path": cfg.drop_path})
    ours = build_backbone(cfg).eval()
    ours.load_weights(state_dict_from_official(ckpt, cfg))
    assert ignored_keys(ckpt) == ["head.bias", "head.weight"]
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(ours(x), model(x))


def test_simmim_encoder_prefix_and_mask_token():
    model = randomize_(build_backbone("swinv2_test", img_size=64), std=0.05).eval()
    ckpt = {("encoder." + k): v for k, v in to_official(model)["model"].items()}
    ckpt["encoder.mask_token"] = model.mask_token.detach().clone()
    ckpt["decoder.0.weight"] = torch.zeros(1)
    cfg = config_from_official({"model": ckpt})
    sd = state_dict_from_official({"model": ckpt}, cfg)
    assert torch.equal(sd["mask_token"], model.mask_token) and "decoder.0.weight" not in sd


def test_missing_image_size_is_clear():
    model = build_backbone("swin_test", img_size=16, window_size=4)  # one window per stage: no shift
    with pytest.raises(ValueError, match="pass img_size"):
        config_from_official(to_official(model))
    assert config_from_official(to_official(model), img_size=16).img_size == 16


def test_not_a_swin_checkpoint():
    with pytest.raises(KeyError, match="patch_embed.proj.weight"):
        config_from_official({"model": {"foo": torch.zeros(1)}})
