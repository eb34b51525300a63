"""The ViT's BEiT options — no absolute positions (``pos_embed='none'``), one relative position
bias shared by all blocks (``rel_pos_bias='shared'``) and layer scale (``layer_scale``), the
student of feature distillation — against HF ``transformers.BeitModel`` given the same weights
(fp32, 1e-5), at the configured resolution and at another one; and the options' bookkeeping:
off by default (no new keys), weight decay, layer ids, resolution transfer, token drop, refusals."""

import pytest
import torch

from convergent.backbones import build_backbone
from convergent.backbones.configs import replace_config
from convergent.backbones.vit import VisionTransformer
from convergent.converters.hf_vit import config_to_hf
from convergent.layers import GridRelativePositionBias

transformers = pytest.importorskip("transformers")

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_dim=64, norm_eps=1e-12)
FD_STUDENT = dict(pos_embed="none", rel_pos_bias="shared", layer_scale=0.1)


def ours(**overrides) -> VisionTransformer:
    return build_backbone("vit_test", **{**TINY, **FD_STUDENT, **overrides})


def beit(model: VisionTransformer):
    """HF ``BeitModel`` with ``model``'s architecture (BEiT's final LayerNorm on every token:
    ``use_mean_pooling=False``; no pooler)."""
    c = model.config
    config = transformers.BeitConfig(
        image_size=c.img_size, patch_size=c.patch_size, num_channels=c.in_chans, hidden_size=c.embed_dim,
        num_hidden_layers=c.depth, num_attention_heads=c.num_heads, intermediate_size=c.mlp_dim, hidden_act="gelu",
        layer_norm_eps=c.norm_eps, use_absolute_position_embeddings=c.pos_embed != "none",
        use_shared_relative_position_bias=c.rel_pos_bias == "shared", use_relative_position_bias=False,
        layer_scale_init_value=c.layer_scale, use_mean_pooling=False, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, drop_path_rate=0.0,
    )  # fmt: skip
    config._attn_implementation = "eager"  # the plain softmax(QK^T + bias) reference
    return transformers.BeitModel(config, add_pooling_layer=False).eval()


def to_beit(sd: dict, depth: int) -> dict:
    """Our ViT state dict → HF ``BeitModel`` keys (BEiT's key projection has no bias: ours must be 0)."""
    out = {
        "embeddings.cls_token": sd["cls_token"],
        "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        "layernorm.weight": sd["norm.weight"],
        "layernorm.bias": sd["norm.bias"],
    }
    if "pos_embed" in sd:
        out["embeddings.position_embeddings"] = sd["pos_embed"]
    if "rel_pos_bias.relative_position_bias_table" in sd:
        out["shared_position_bias.relative_position_bias_table"] = sd["rel_pos_bias.relative_position_bias_table"]
    for i in range(depth):
        b, h = f"blocks.{i}.", f"layers.{i}."
        q, k, v = sd[b + "attn.qkv.weight"].chunk(3)
        qb, kb, vb = sd[b + "attn.qkv.bias"].chunk(3)
        assert not kb.any(), "BEiT has no key bias"
        out |= {h + "attention.q_proj.weight": q, h + "attention.k_proj.weight": k, h + "attention.v_proj.weight": v,
                h + "attention.q_proj.bias": qb, h + "attention.v_proj.bias": vb,
                h + "lambda_1": sd[b + "gamma_1"], h + "lambda_2": sd[b + "gamma_2"]}  # fmt: skip
        pairs = (("attn.proj", "attention.o_proj"), ("norm1", "layernorm_before"), ("norm2", "layernorm_after"),
                 ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"))  # fmt: skip
        for mine, theirs in pairs:
            for t in ("weight", "bias"):
                out[f"{h}{theirs}.{t}"] = sd[f"{b}{mine}.{t}"]
    return {k: v.clone() for k, v in out.items()}


def randomize_(model: VisionTransformer, seed: int = 0) -> None:
    """Noticeable random weights everywhere (the bias table and layer scales included, so a wrong
    index or a missing gamma cannot pass), the key bias at zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.2
            p.copy_(noise + 1.0 if name.endswith(("norm1.weight", "norm2.weight")) else noise)
        for block in model.blocks:
            block.attn.qkv.bias[model.embed_dim : 2 * model.embed_dim] = 0


@pytest.mark.parametrize("overrides", [{}, {"pos_embed": "learned"}], ids=["fd-student", "with-absolute"])
@pytest.mark.parametrize("side", [32, 48], ids=["configured", "other-resolution"])
def test_matches_hf_beit(overrides, side):
    torch.manual_seed(0)
    model = ours(**overrides).eval()
    randomize_(model)
    hf = beit(model)
    hf.load_state_dict(to_beit(model.state_dict(), model.config.depth), strict=True)
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(pixel_values=x, interpolate_pos_encoding=side != 32).last_hidden_state
        got = model.forward_features(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_off_by_default_and_bookkeeping():
    plain = build_backbone("vit_test")
    assert plain.rel_pos_bias is None and all(b.gamma_1 is None and b.gamma_2 is None for b in plain.blocks)
    model = ours()
    keys = set(model.state_dict())
    assert keys - set(plain.state_dict()) == {"rel_pos_bias.relative_position_bias_table"} | {
        f"blocks.{i}.gamma_{j}" for i in range(2) for j in (1, 2)
    }
    assert "pos_embed" not in keys and model.pos_embed is None
    assert torch.equal(model.blocks[0].gamma_1, torch.full((32,), 0.1))
    assert not model.rel_pos_bias.relative_position_bias_table.any()  # BEiT: zeros
    no_decay = model.no_weight_decay()
    assert {"rel_pos_bias.relative_position_bias_table", "blocks.0.gamma_1", "cls_token"} <= no_decay
    assert model.layer_id("rel_pos_bias.relative_position_bias_table") == model.num_layers - 1
    assert model.layer_id("blocks.1.gamma_2") == 2


def test_shared_bias_is_one_table_in_every_block():
    model = ours().eval()
    randomize_(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model.forward_features(x)
        model.rel_pos_bias.relative_position_bias_table.zero_()
        after = model.forward_features(x)
    assert not torch.allclose(before, after)
    table = model.rel_pos_bias.relative_position_bias_table
    assert table.shape == ((2 * 4 - 1) ** 2 + 3, 2)
    index = GridRelativePositionBias.grid_index((4, 4))
    assert index[0, 1:].unique().tolist() == [49] and index[1:, 0].unique().tolist() == [50] and index[0, 0] == 51
    assert index[1, 1] == index[2, 2] == 24  # zero offset: the centre of the 7 x 7 offsets


def test_token_drop_gathers_the_bias_of_the_kept_patches():
    model = ours().eval()
    randomize_(model)
    x = torch.randn(2, 3, 32, 32)
    keep = torch.tensor([[0, 5, 9], [3, 4, 15]])
    bias = model.attention_bias((4, 4), keep)  # (B, H, 1 + K, 1 + K)
    full = model.attention_bias((4, 4))[0]  # (H, 17, 17)
    pos = torch.tensor([0, 4, 5, 16])  # sample 1: class token and patches 3, 4, 15
    torch.testing.assert_close(bias[1], full[:, pos][:, :, pos])
    assert model.forward_features(x, keep=keep).shape == (2, 4, 32)


def test_resolution_transfer_resizes_the_table():
    model = ours()
    randomize_(model)
    bigger = VisionTransformer(replace_config(model.config, img_size=48))
    sd = bigger.adapt_state_dict(model.state_dict(), model.config)
    table = sd["rel_pos_bias.relative_position_bias_table"]
    assert table.shape == ((2 * 6 - 1) ** 2 + 3, 2)
    torch.testing.assert_close(table[-3:], model.state_dict()["rel_pos_bias.relative_position_bias_table"][-3:])
    bigger.load_weights(sd)
    # the same bias HF BEiT (and our forward at 48 px) computes on the fly
    torch.testing.assert_close(bigger.rel_pos_bias(), model.rel_pos_bias((6, 6)))


def test_refusals():
    with pytest.raises(ValueError, match="rel_pos_bias must be one of none, shared"):
        ours(rel_pos_bias="per-block")
    with pytest.raises(ValueError, match="layer_scale must be > 0"):
        ours(layer_scale=0.0)
    with pytest.raises(ValueError, match="rel_pos_bias 'shared'.*forward_intermediates"):
        ours().forward_tokens(torch.randn(2, 17, 32))
    for option in ({"rel_pos_bias": "shared"}, {"layer_scale": 0.1}, {"pos_embed": "none"}):
        with pytest.raises(ValueError, match="HF ViTModel"):
            config_to_hf(build_backbone("vit_test", **option).config)
