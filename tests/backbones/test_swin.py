"""Swin V1/V2: parity with HF transformers (both conversion directions), mask token,
resolution/window transfer, contract details."""

import pytest
import torch
import transformers

from convergent.backbones import backbone_config, build_backbone
from convergent.backbones.swin import SwinTransformer
from convergent.converters import hf_swin
from tests.conftest import assert_grads_match, randomize_, rel_err

HF = {
    1: (transformers.SwinConfig, transformers.SwinModel),
    2: (transformers.Swinv2Config, transformers.Swinv2Model),
}


def hf_model(version: int, img: int, window: int, mask_token: bool = False, **kw):
    config_cls, model_cls = HF[version]
    cfg = config_cls(
        image_size=img, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=window, **kw
    )
    cfg.drop_path_rate = 0.0
    return randomize_(model_cls(cfg, use_mask_token=mask_token)).eval()


def convert_from(hm) -> SwinTransformer:
    cfg = hf_swin.config_from_hf(hm.config.to_dict())
    ours = build_backbone(cfg).eval()
    ours.load_weights(hf_swin.state_dict_from_hf(hm.state_dict(), cfg))
    return ours


def convert_to(ours: SwinTransformer, mask_token: bool = False):
    version = ours.config.version
    config_cls, model_cls = HF[version]
    hm = model_cls(config_cls(**hf_swin.config_to_hf(ours.config)), use_mask_token=mask_token).eval()
    hm.load_state_dict(hf_swin.state_dict_to_hf(ours.state_dict(), ours.config, mask_token=mask_token), strict=True)
    return hm


# 32 px / patch 4 = 8x8 tokens, window 4: shifted windows in stage 0.
# 40 px -> 10x10 tokens, not a multiple of the window: padded, shifted (HF pads too).
CASES = [(1, 32, 4), (2, 32, 4), (1, 40, 4), (2, 40, 4), (2, 56, 3)]


@pytest.mark.parametrize("version,img,window", CASES)
@pytest.mark.parametrize("direction", ["from_hf", "to_hf"])
def test_parity_with_hf(version, img, window, direction):
    if direction == "from_hf":
        hm = hf_model(version, img, window)
        ours = convert_from(hm)
    else:
        cfg = backbone_config(f"swin{'v2' if version == 2 else ''}_test", img_size=img, window_size=window)
        ours = randomize_(build_backbone(cfg, drop_path=0.0)).eval()
        hm = convert_to(ours)
    x = torch.randn(2, 3, img, img)
    xh, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_h = hm(pixel_values=xh)
    tokens = ours(xo)
    assert tokens.shape == out_h.last_hidden_state.shape
    assert (tokens - out_h.last_hidden_state).abs().max() <= 1e-5
    assert (ours.pooled(tokens) - out_h.pooler_output).abs().max() <= 1e-5
    w = torch.randn_like(tokens)
    (out_h.last_hidden_state * w).sum().backward()
    (tokens * w).sum().backward()
    assert rel_err(xo.grad, xh.grad) <= 1e-4
    grads_h = {k: p.grad for k, p in hm.named_parameters()}
    grads_o = hf_swin.state_dict_to_hf({k: p.grad for k, p in ours.named_parameters()}, ours.config)
    assert_grads_match(grads_o, grads_h)


@pytest.mark.parametrize("version", [1, 2])
def test_mask_token_parity(version):
    hm = hf_model(version, 32, 4, mask_token=True)
    ours = convert_from(hm)
    assert torch.equal(ours.mask_token, hm.embeddings.mask_token)
    x = torch.randn(2, 3, 32, 32)
    mask = torch.rand(2, 64) < 0.6
    ref = hm(pixel_values=x, bool_masked_pos=mask).last_hidden_state
    out = ours(x, mask=mask)
    assert (out - ref).abs().max() <= 1e-5
    assert (out - ours(x)).abs().max() > 1e-3  # the mask changes the output


def test_legacy_v1_layout_converts():
    hm = hf_model(1, 32, 4)
    ours = convert_from(hm)
    legacy = hf_swin.state_dict_to_hf(ours.state_dict(), ours.config, legacy=True)
    assert "encoder.layers.0.blocks.1.attention.self.query.weight" in legacy
    assert "encoder.layers.0.blocks.1.intermediate.dense.bias" in legacy
    legacy["encoder.layers.0.blocks.0.attention.self.relative_position_index"] = torch.zeros(16 * 16)  # a 4.x buffer
    again = hf_swin.state_dict_from_hf({"swin." + k: v for k, v in legacy.items()}, ours.config)
    for k, v in ours.state_dict().items():
        assert torch.equal(again[k], v), k


def test_unknown_key_is_reported():
    hm = hf_model(2, 32, 4)
    cfg = hf_swin.config_from_hf(hm.config.to_dict())
    sd = dict(hm.state_dict(), **{"encoder.layers.0.blocks.0.surprise": torch.zeros(1)})
    with pytest.raises(KeyError, match="surprise"):
        hf_swin.state_dict_from_hf(sd, cfg)
    sd = dict(hm.state_dict(), **{"classifier.weight": torch.zeros(1)})  # heads are skipped
    assert "classifier.weight" not in hf_swin.state_dict_from_hf(sd, cfg)


def test_config_round_trip():
    for name in ("swin_tiny", "swinv2_base"):
        cfg = backbone_config(name)
        assert hf_swin.config_from_hf(hf_swin.config_to_hf(cfg)) == cfg


# --- resolution and window transfer ---------------------------------------------------------


def _small(version: int, img: int, window: int):
    name = "swinv2_test" if version == 2 else "swin_test"
    return backbone_config(name, img_size=img, window_size=window, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))


def test_v2_transfer_192_w6_to_256_w8(tmp_path):
    model = randomize_(build_backbone(_small(2, 192, 6), drop_path=0.0), std=0.05).eval()
    model.save_pretrained(tmp_path)
    same = SwinTransformer.from_pretrained(tmp_path).eval()
    x = torch.randn(1, 3, 192, 192)
    assert torch.equal(same(x), model(x))  # same size: bit-identical
    big = SwinTransformer.from_pretrained(tmp_path, img_size=256, window_size=8).eval()
    assert big.config.pretrained_window_sizes == (6, 6, 6, 6)
    assert big.layers[0].blocks[0].rel_pos.coords.shape == (15 * 15, 2)  # rebuilt for window 8
    y = torch.randn(1, 3, 256, 256)
    out = big(y)
    assert out.shape == (1, 64, 128)
    # the regenerated continuous bias is the reference's: HF Swinv2 with the same weights and
    # pretrained_window_sizes gives the same output
    hm = convert_to(big)
    assert hm.config.pretrained_window_sizes == [6, 6, 6, 6]
    assert (hm(pixel_values=y).last_hidden_state - out).abs().max() <= 1e-5
    # the CPB MLP weights transferred unchanged
    assert torch.equal(big.layers[1].blocks[0].rel_pos.cpb_mlp[0].weight, model.layers[1].blocks[0].rel_pos.cpb_mlp[0].weight)


def test_v1_transfer_interpolates_bias_tables(tmp_path):
    model = randomize_(build_backbone(_small(1, 64, 4), drop_path=0.0, ape=True), std=0.05).eval()
    model.save_pretrained(tmp_path)
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(SwinTransformer.from_pretrained(tmp_path).eval()(x), model(x))
    big = SwinTransformer.from_pretrained(tmp_path, img_size=96, window_size=6).eval()
    table = big.layers[0].blocks[0].rel_pos.relative_position_bias_table
    assert table.shape == (11 * 11, 1)
    assert big.absolute_pos_embed.shape == (1, 24 * 24, 16)
    assert big(torch.randn(1, 3, 96, 96)).shape == (1, 9, 128)
    # a table interpolated to its own size is unchanged; to a new size it keeps the centre value
    old = model.layers[0].blocks[0].rel_pos.relative_position_bias_table
    centre_old, centre_new = old.view(7, 7, 1)[3, 3], table.view(11, 11, 1)[5, 5]
    assert torch.allclose(centre_old, centre_new, atol=1e-6)


def test_from_pretrained_reports_key_problems(tmp_path):
    model = build_backbone("swinv2_test")
    model.save_pretrained(tmp_path)
    from safetensors.torch import load_file, save_file

    sd = load_file(str(tmp_path / "model.safetensors"))
    sd["extra.weight"] = torch.zeros(1)
    del sd["norm.bias"]
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(KeyError, match=r"missing keys \['norm.bias'\].*unexpected keys \['extra.weight'\]"):
        SwinTransformer.from_pretrained(tmp_path)


# --- contract ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["swin_test", "swinv2_test"])
def test_intermediates_and_layer_ids(name):
    model = build_backbone(name).eval()
    x = torch.randn(2, 3, 32, 32)
    final, inter = model.forward_intermediates(x)
    assert len(inter) == 4 and inter[0].shape == (2, 64, 16) and inter[-1].shape == (2, 16, 32)
    _, last = model.forward_intermediates(x, indices=[-1])
    assert torch.equal(last[0], inter[-1])
    assert torch.equal(final, model(x))
    ids = {n: model.layer_id(n) for n, _ in model.named_parameters()}
    assert ids["patch_embed.proj.weight"] == 0 and ids["mask_token"] == 0
    assert ids["layers.0.blocks.1.mlp.fc1.weight"] == 2
    assert ids["layers.0.downsample.reduction.weight"] == 2
    assert ids["layers.1.blocks.0.norm1.weight"] == 3
    assert ids["norm.weight"] == model.num_layers - 1 == 5
    nwd = model.no_weight_decay()
    assert "mask_token" in nwd and "layers.0.blocks.0.attn.qkv.weight" not in nwd


def test_bad_mask_shape_is_clear():
    model = build_backbone("swin_test")
    with pytest.raises(ValueError, match="mask of shape"):
        model(torch.randn(1, 3, 32, 32), mask=torch.zeros(1, 10, dtype=torch.bool))
