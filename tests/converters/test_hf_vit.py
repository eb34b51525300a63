"""Parity of convergent's ViT with HF ``transformers.ViTModel`` through the converter, at tiny
size with noticeable random weights (so a wrong mapping cannot pass)."""

import json

import pytest
import torch

from convergent.backbones import ViTConfig
from convergent.backbones.vit import VisionTransformer
from convergent.converters.hf_vit import config_from_hf, config_to_hf, state_dict_from_hf, state_dict_to_hf

transformers = pytest.importorskip("transformers")

HF_TINY = dict(
    image_size=32,
    patch_size=8,
    num_channels=3,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    hidden_act="gelu",
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    layer_norm_eps=1e-12,
    qkv_bias=True,
)


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Normal(0, 0.2) for every tensor; LayerNorm weights 1 + Normal(0, 0.2)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.2
            is_norm_weight = name.endswith("weight") and p.ndim == 1
            p.copy_(noise + 1.0 if is_norm_weight else noise)


def _hf_model(mask_token: bool = False, seed: int = 0, **overrides):
    config = transformers.ViTConfig(**{**HF_TINY, **overrides})
    config._attn_implementation = "eager"  # the plain softmax(QK^T) reference
    model = transformers.ViTModel(config, add_pooling_layer=True, use_mask_token=mask_token)
    _randomize(model, seed)
    return model.eval()


def _ours_from_hf(hf) -> VisionTransformer:
    cfg = config_from_hf(hf.config.to_dict(), pooler=True)
    model = VisionTransformer(cfg)
    model.load_weights(state_dict_from_hf(hf.state_dict(), cfg))
    return model.eval()


def _images(b=2, h=32, w=32, seed=1) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _assert_outputs_match(hf, ours, x, **hf_kwargs):
    out = hf(pixel_values=x, **hf_kwargs)
    tokens = ours(x, mask=hf_kwargs.get("bool_masked_pos"))
    assert tokens.shape == out.last_hidden_state.shape
    assert (tokens - out.last_hidden_state).abs().max().item() <= 1e-5
    assert (ours.pooled(tokens) - out.pooler_output).abs().max().item() <= 1e-5


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_hf_to_ours_forward_parity():
    hf = _hf_model()
    ours = _ours_from_hf(hf)
    assert ours.config.norm_eps == 1e-12
    with torch.no_grad():
        _assert_outputs_match(hf, ours, _images())


def test_ours_to_hf_forward_parity():
    torch.manual_seed(0)
    ours = VisionTransformer(ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_dim=64, pooler=True))
    _randomize(ours, seed=3)
    ours.eval()
    hf = transformers.ViTModel(transformers.ViTConfig(**config_to_hf(ours.config)), add_pooling_layer=True)
    hf.load_state_dict(state_dict_to_hf(ours.state_dict(), ours.config), strict=True)
    with torch.no_grad():
        _assert_outputs_match(hf.eval(), ours, _images())


def test_gradient_parity_inputs_and_parameters():
    hf = _hf_model()
    ours = _ours_from_hf(hf)
    g = torch.Generator().manual_seed(5)
    w_tok, w_pool = torch.randn(2, 17, 32, generator=g), torch.randn(2, 32, generator=g)
    x_hf = _images().requires_grad_(True)
    x_ours = x_hf.detach().clone().requires_grad_(True)
    out = hf(pixel_values=x_hf)
    ((out.last_hidden_state * w_tok).sum() + (out.pooler_output * w_pool).sum()).backward()
    tokens = ours(x_ours)
    ((tokens * w_tok).sum() + (ours.pooled(tokens) * w_pool).sum()).backward()
    assert _rel_err(x_ours.grad, x_hf.grad) <= 1e-4
    # the mapping is a renaming plus a concatenation, so it maps gradients as it maps weights
    hf_grads = state_dict_from_hf({n: p.grad for n, p in hf.named_parameters()}, ours.config)
    for name, p in ours.named_parameters():
        if name == "mask_token":  # unused without a mask: no gradient on either side
            assert p.grad is None
            continue
        assert _rel_err(p.grad, hf_grads[name]) <= 1e-4, name


def test_mask_token_parity():
    hf = _hf_model(mask_token=True)
    ours = _ours_from_hf(hf)
    assert ours.mask_token.abs().sum() > 0  # randomised, so taken from the checkpoint
    mask = torch.rand(2, 16, generator=torch.Generator().manual_seed(2)) < 0.5
    with torch.no_grad():
        _assert_outputs_match(hf, ours, _images(), bool_masked_pos=mask)


@pytest.mark.parametrize("size", [(48, 48), (40, 24)])
def test_interpolate_pos_encoding_parity(size):
    hf = _hf_model()
    ours = _ours_from_hf(hf)
    with torch.no_grad():
        _assert_outputs_match(hf, ours, _images(h=size[0], w=size[1]), interpolate_pos_encoding=True)


def test_legacy_layout_names_and_round_trip(tmp_path):
    ours = _ours_from_hf(_hf_model())
    cfg = ours.config
    legacy = state_dict_to_hf(ours.state_dict(), cfg, legacy=True)
    layer0 = {k for k in legacy if k.startswith("encoder.layer.0.")}
    expected = {
        f"encoder.layer.0.{m}.{t}"
        for m in (
            "attention.attention.query",
            "attention.attention.key",
            "attention.attention.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
            "layernorm_before",
            "layernorm_after",
        )
        for t in ("weight", "bias")
    }
    assert layer0 == expected
    assert not any(k.startswith("layers.") for k in legacy)
    back = state_dict_from_hf({f"vit.{k}": v for k, v in legacy.items()}, cfg)
    reference = ours.state_dict()
    assert back.keys() == reference.keys()
    assert all(torch.equal(back[k], reference[k]) for k in reference)
    # HF's own loader renames the 4.x names (conversion_mapping.py) and accepts them all
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text(json.dumps(config_to_hf(cfg)))
    save_file({k: v.contiguous() for k, v in legacy.items()}, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    hf, info = transformers.ViTModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    with torch.no_grad():
        _assert_outputs_match(hf.eval(), ours, _images())


def test_heads_ignored_pooler_dropped_unknown_keys_reported():
    hf = _hf_model()
    sd = {f"vit.{k}": v for k, v in hf.state_dict().items()}
    sd["classifier.weight"] = torch.zeros(10, 32)
    cfg = config_from_hf(hf.config.to_dict(), pooler=False)
    out = state_dict_from_hf(sd, cfg)
    assert not any(k.startswith("pooler") for k in out)
    VisionTransformer(cfg).load_weights(out)
    sd["vit.encoder.mystery.weight"] = torch.zeros(1)
    sd["vit.layers.0.attention.extra"] = torch.zeros(1)
    with pytest.raises(KeyError, match=r"2 keys were not understood.*encoder\.mystery\.weight"):
        state_dict_from_hf(sd, cfg)
    del sd["vit.layers.0.attention.q_proj.weight"]
    with pytest.raises(KeyError, match="q_proj.weight"):
        state_dict_from_hf(sd, cfg)


@pytest.mark.parametrize("act", ["gelu", "gelu_tanh", "relu"])
def test_config_round_trip(act):
    cfg = ViTConfig(img_size=48, patch_size=8, in_chans=1, embed_dim=24, depth=3, num_heads=3, mlp_dim=40,
                    qkv_bias=False, norm_eps=1e-12, act=act, dropout=0.1, attn_dropout=0.2, pooler=True)
    hf_dict = transformers.ViTConfig(**config_to_hf(cfg)).to_dict()
    assert config_from_hf(hf_dict, pooler=True) == cfg
    hf_dict = transformers.ViTConfig(**{**HF_TINY, "image_size": [32, 32], "patch_size": [8, 8]}).to_dict()
    assert config_from_hf(hf_dict).img_size == 32 and config_from_hf(hf_dict).patch_size == 8


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(hidden_act="quick_gelu"), "hidden_act"),
        (dict(image_size=[32, 48]), "not square"),
        (dict(pooler_act="relu"), "pooler"),
        (dict(model_type="deit"), "model_type"),
    ],
)
def test_config_from_hf_rejects_unsupported(change, message):
    with pytest.raises(ValueError, match=message):
        config_from_hf({**HF_TINY, **change}, pooler=True)


def test_qkv_without_bias_converts():
    hf = _hf_model(qkv_bias=False)
    ours = _ours_from_hf(hf)
    assert ours.blocks[0].attn.qkv.bias is None
    with torch.no_grad():
        _assert_outputs_match(hf, ours, _images())
    hf2 = transformers.ViTModel(transformers.ViTConfig(**config_to_hf(ours.config)), add_pooling_layer=True)
    hf2.load_state_dict(state_dict_to_hf(ours.state_dict(), ours.config), strict=True)


def test_sincos_and_frozen_patch_projection_convert_as_plain_weights():
    """MoCo v3 / MAE's options are training choices: the fixed table and the frozen projection go
    over as HF's (learned) position embeddings and patch projection, same outputs."""
    torch.manual_seed(0)
    cfg = ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_dim=64, pooler=True,
                    pos_embed="sincos", freeze_patch_embed=True, init="xavier_qkv")  # fmt: skip
    ours = VisionTransformer(cfg)
    _randomize(ours, seed=3)
    ours.eval()
    hf = transformers.ViTModel(transformers.ViTConfig(**config_to_hf(ours.config)), add_pooling_layer=True)
    hf.load_state_dict(state_dict_to_hf(ours.state_dict(), ours.config), strict=True)
    torch.testing.assert_close(hf.embeddings.position_embeddings, ours.pos_embed, rtol=0, atol=0)
    with torch.no_grad():
        _assert_outputs_match(hf.eval(), ours, _images())
