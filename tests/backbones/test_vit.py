"""VisionTransformer: the Backbone contract, token drop (MAE), mask token (SimMIM),
intermediates, weights on disk with resolution transfer, grad checkpointing; MoCo v3 / MAE's
fixed sin-cos positions, frozen patch projection and Xavier initialisations."""

import math

import numpy as np
import pytest
import torch

from convergent.backbones import build_backbone
from convergent.backbones.protocol import Backbone
from convergent.backbones.vit import VisionTransformer
from convergent.config import ModelConfig, OptimConfig, PretrainConfig
from convergent.layers import sincos_pos_embed_2d
from convergent.training.optim import build_optimizer
from convergent.validate import ConfigError, check_config

B, N, C = 3, 16, 32  # vit_test: 32 px, patch 8 → 4x4 grid, width 32, 2 blocks


def _model(seed: int = 0, **overrides) -> VisionTransformer:
    torch.manual_seed(seed)
    model = build_backbone("vit_test", **overrides)
    with torch.no_grad():  # non-trivial class/mask tokens and norms
        model.mask_token.normal_(std=0.5)
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def _images(b: int = B, h: int = 32, w: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_registry_builds_vit_with_capabilities():
    model = build_backbone("vit_test")
    assert isinstance(model, VisionTransformer) and isinstance(model, Backbone)
    assert model.supports_mask_token and model.supports_token_drop and not model.supports_causal
    assert model.supports_patch_tokens
    assert model.num_prefix_tokens == 1
    assert model.embed_dim == model.num_features == C
    assert model.pos_embed.shape == (1, 1 + N, C) and model.cls_token.shape == model.mask_token.shape == (1, 1, C)


def test_init():
    model = build_backbone("vit_test", depth=4, pooler=True)
    assert 0.005 < model.mask_token.std().item() < 0.04  # SimMIM init
    assert 0.01 < model.pos_embed.std().item() < 0.03
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert torch.count_nonzero(p) == 0, name
        elif p.ndim == 1:  # LayerNorm weight
            assert torch.all(p == 1), name
        elif name.endswith("qkv.weight"):
            assert 0.015 < p.std().item() < 0.025, name
    rates = [b.drop_path.p for b in build_backbone("vit_test", depth=5, drop_path=0.2).blocks]
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])


@pytest.mark.parametrize("global_pool, pooler", [("cls", False), ("avg", False), ("cls", True)])
def test_shapes_and_pooling(global_pool, pooler):
    model = _model(global_pool=global_pool, pooler=pooler)
    tokens = model(_images())
    assert tokens.shape == (B, 1 + N, C)
    pooled = model.pooled(tokens)
    assert pooled.shape == (B, C)
    base = tokens[:, 0] if global_pool == "cls" else tokens[:, 1:].mean(1)
    expected = torch.tanh(model.pooler.dense(base)) if pooler else base
    torch.testing.assert_close(pooled, expected, rtol=0, atol=0)


def test_keep_all_equals_full_forward():
    model = _model()
    x = _images()
    keep = torch.arange(N).expand(B, N)
    assert torch.equal(model(x, keep=keep), model(x))


def _reference_keep(model: VisionTransformer, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Token drop written sample by sample with plain indexing."""
    outs = []
    for b in range(x.shape[0]):
        patches, _ = model.patch_embed(x[b : b + 1])  # (1, N, C)
        patches = (patches + model.pos_embed[:, 1:])[:, keep[b]]  # (1, K, C)
        t = torch.cat([model.cls_token + model.pos_embed[:, :1], patches], dim=1)
        for block in model.blocks:
            t = block(t)
        outs.append(model.norm(t))
    return torch.cat(outs)


def test_keep_gathers_per_sample():
    model = _model()
    x = _images()
    g = torch.Generator().manual_seed(3)
    keep = torch.stack([torch.randperm(N, generator=g)[:5] for _ in range(B)])  # (B, 5), differ per sample
    tokens = model(x, keep=keep)
    assert tokens.shape == (B, 6, C)
    torch.testing.assert_close(tokens, _reference_keep(model, x, keep), rtol=1e-5, atol=1e-5)
    # dropped patches have no influence on the kept tokens
    x2 = x.clone()
    dropped = [i for i in range(N) if i not in keep[0].tolist()][0]
    r, c = divmod(dropped, 4)
    x2[0, :, r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8] += 5.0
    torch.testing.assert_close(model(x2, keep=keep), tokens, rtol=0, atol=0)


def test_mask_token_replaces_hidden_patches():
    model = _model()
    x = _images()
    mask = torch.zeros(B, N, dtype=torch.bool)
    assert torch.equal(model(x, mask=mask), model(x))
    mask[:, [0, 5, 10]] = True
    out = model(x, mask=mask)
    assert not torch.allclose(out, model(x))
    # pixels under a hidden patch no longer matter; pixels under a visible one do
    x_hidden, x_visible = x.clone(), x.clone()
    x_hidden[:, :, 8:16, 8:16] += 5.0  # patch 5 (row 1, col 1): hidden
    x_visible[:, :, 8:16, 16:24] += 5.0  # patch 6: visible
    torch.testing.assert_close(model(x_hidden, mask=mask), out, rtol=0, atol=0)
    assert not torch.allclose(model(x_visible, mask=mask), out)


def test_intermediates():
    model = _model(depth=4)
    x = _images()
    final, outs = model.forward_intermediates(x)
    assert len(outs) == 4 and all(o.shape == (B, 1 + N, C) for o in outs)
    torch.testing.assert_close(model.norm(outs[-1]), final, rtol=0, atol=0)
    _, last2 = model.forward_intermediates(x, indices=2)
    assert all(torch.equal(a, b) for a, b in zip(last2, outs[2:]))
    _, picked = model.forward_intermediates(x, indices=[-1, 0])
    assert len(picked) == 2 and torch.equal(picked[0], outs[0]) and torch.equal(picked[1], outs[3])
    _, none = model.forward_intermediates(x, indices=[])
    assert none == []
    with pytest.raises(IndexError, match="out of range"):
        model.forward_intermediates(x, indices=[4])
    _, kept = model.forward_intermediates(x, indices=1, keep=torch.arange(4).expand(B, 4))
    assert kept[0].shape == (B, 5, C)


def test_clear_errors():
    model = _model()
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, H, W\), got \(3, 1, 32, 32\)"):
        model(torch.randn(B, 1, 32, 32))
    with pytest.raises(ValueError, match="30x32 is not a multiple of the patch size 8"):
        model(torch.randn(B, 3, 30, 32))
    with pytest.raises(ValueError, match=r"mask of shape \(3, 15\) does not match tokens \(3, 16\)"):
        model(_images(), mask=torch.zeros(B, 15, dtype=torch.bool))
    with pytest.raises(ValueError, match="not both"):
        model(_images(), mask=torch.zeros(B, N, dtype=torch.bool), keep=torch.zeros(B, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"keep must be \(B=3, K\)"):
        model(_images(), keep=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="global_pool"):
        build_backbone("vit_test", global_pool="max")


def test_weight_decay_and_layer_ids():
    model = _model(pooler=True)
    nwd = model.no_weight_decay()
    assert {"pos_embed", "cls_token", "mask_token", "norm.weight", "blocks.0.norm1.weight", "pooler.dense.bias"} <= nwd
    assert not any(n.endswith(("qkv.weight", "fc1.weight", "proj.weight", "dense.weight")) for n in nwd)
    names = dict(model.named_parameters())
    assert nwd <= set(names)
    assert model.num_layers == 4
    ids = {n: model.layer_id(n) for n in names}
    assert ids["patch_embed.proj.weight"] == ids["cls_token"] == ids["pos_embed"] == ids["mask_token"] == 0
    assert ids["blocks.0.attn.qkv.weight"] == 1 and ids["blocks.1.mlp.fc2.bias"] == 2
    assert ids["norm.weight"] == ids["pooler.dense.weight"] == 3
    with pytest.raises(ValueError, match="no parameter"):
        model.layer_id("head.weight")


def test_save_and_load_bit_identical(tmp_path):
    model = _model(pooler=True)
    model.save_pretrained(tmp_path / "vit")
    loaded = VisionTransformer.from_pretrained(tmp_path / "vit").eval()
    assert loaded.config == model.config
    x = _images()
    assert torch.equal(loaded(x), model(x))
    assert torch.equal(loaded.pooled(loaded(x)), model.pooled(model(x)))


def test_from_pretrained_larger_img_size_interpolates(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path / "vit")
    big = VisionTransformer.from_pretrained(tmp_path / "vit", img_size=48).eval()
    assert big.pos_embed.shape == (1, 1 + 36, C)
    assert torch.equal(big.pos_embed[:, :1], model.pos_embed[:, :1])
    x = _images(h=48, w=48)
    torch.testing.assert_close(big(x), model(x), rtol=0, atol=0)  # = on-the-fly interpolation
    with pytest.raises(ValueError, match="patch_size 8 into a model with patch_size 4"):
        VisionTransformer.from_pretrained(tmp_path / "vit", patch_size=4)


def test_grad_checkpointing_same_grads():
    model = _model(drop_path=0.0)
    model.train()
    x = _images()
    keep = torch.arange(10).expand(B, 10)

    def grads():
        model.zero_grad()
        tokens = model(x, keep=keep)
        (tokens.square().sum() + model.pooled(tokens).sum()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    calls = []
    model.blocks[0].register_forward_pre_hook(lambda *_: calls.append(1))
    plain = grads()
    assert len(calls) == 1
    model.set_grad_checkpointing(True)
    checkpointed = grads()
    assert len(calls) == 3  # forward, then recomputed during backward
    assert plain.keys() == checkpointed.keys() and len(plain) > 10
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-6, atol=1e-7)


def test_config_files_with_the_old_pooling_name_still_load(tmp_path):
    """config.json written before the one pooling vocabulary says global_pool 'token': read as 'cls'."""
    model = build_backbone("vit_test").eval()
    model.save_pretrained(tmp_path / "vit")
    cfg_file = tmp_path / "vit" / "config.json"
    cfg_file.write_text(cfg_file.read_text().replace('"global_pool": "cls"', '"global_pool": "token"'))
    assert '"token"' in cfg_file.read_text()
    again = VisionTransformer.from_pretrained(tmp_path / "vit")
    assert again.config.global_pool == "cls"
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(again.pooled(again(x)), model.pooled(model(x)))


# --- MoCo v3 / MAE options: fixed sin-cos positions, frozen patch projection, Xavier init ------------


def official_sincos(grid: int, dim: int) -> np.ndarray:
    """MAE ``util/pos_embed.py:get_2d_sincos_pos_embed(dim, grid, cls_token=True)``, written out
    in NumPy: the first half encodes ``grid[0]`` of ``np.meshgrid(w, h)`` (the column), the
    second half the row; each half ``[sin(p·ω), cos(p·ω)]``, ``ω = 1 / 10000^(k / (dim/4))``."""
    cols, rows = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))

    def one_d(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    emb = np.concatenate([one_d(dim // 2, cols), one_d(dim // 2, rows)], axis=1)
    return np.concatenate([np.zeros([1, dim]), emb], axis=0)


def test_sincos_table_equals_the_official():
    for grid, dim in ((4, 32), (7, 64), (14, 768)):
        want = torch.from_numpy(official_sincos(grid, dim)).float()
        torch.testing.assert_close(sincos_pos_embed_2d(grid, dim), want, rtol=0, atol=1e-6)
    model = build_backbone("vit_test", pos_embed="sincos")
    torch.testing.assert_close(model.pos_embed[0], torch.from_numpy(official_sincos(4, C)).float(), rtol=0, atol=1e-6)
    assert "pos_embed" not in dict(model.named_parameters()) and "pos_embed" in model.state_dict()  # fixed, saved
    assert not model.pos_embed.requires_grad
    model(_images()).sum().backward()
    assert model.pos_embed.grad is None


def test_sincos_save_load_and_other_resolutions(tmp_path):
    model = _model(pos_embed="sincos")
    model.save_pretrained(tmp_path / "vit")
    loaded = VisionTransformer.from_pretrained(tmp_path / "vit").eval()
    assert loaded.config.pos_embed == "sincos" and torch.equal(loaded(_images()), model(_images()))
    big = VisionTransformer.from_pretrained(tmp_path / "vit", img_size=48).eval()
    torch.testing.assert_close(big.pos_embed, sincos_pos_embed_2d(6, C)[None], rtol=0, atol=0)  # recomputed
    x = _images(h=48, w=48)
    torch.testing.assert_close(big(x), model(x), rtol=0, atol=0)  # = the table computed on the fly
    learned = VisionTransformer.from_pretrained(tmp_path / "vit", pos_embed="learned")  # fine-tuning them
    assert learned.pos_embed.requires_grad and torch.equal(learned.pos_embed, model.pos_embed)


def test_frozen_patch_embed_gets_no_gradient_and_no_update():
    model = build_backbone("vit_test", freeze_patch_embed=True).train()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"patch_embed.proj.weight", "patch_embed.proj.bias"}
    opt = build_optimizer(model, OptimConfig(lr=1e-2, weight_decay=0.1))
    assert not any(p is model.patch_embed.proj.weight for g in opt.param_groups for p in g["params"])
    before = {n: p.clone() for n, p in model.named_parameters()}
    for _ in range(2):
        model(_images()).square().mean().backward()
        opt.step()
        opt.zero_grad()
    assert model.patch_embed.proj.weight.grad is None
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) == (n in frozen or n == "mask_token"), n  # the mask token is unused here


def test_init_options():
    """Bounds and spreads of Xavier-uniform: U(±sqrt(6 / (fan_in + fan_out))), std bound / sqrt(3)."""
    mae, moco = build_backbone("vit_test", init="xavier"), build_backbone("vit_test", init="xavier_qkv")
    for model, qkv_fans in ((mae, 3 * C + C), (moco, C + C)):
        w = model.blocks[0].attn.qkv.weight  # (3C, C)
        bound = math.sqrt(6 / qkv_fans)
        assert w.abs().max() <= bound and w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
        fc1 = model.blocks[0].mlp.fc1.weight  # (4C, C)
        assert fc1.abs().max() <= math.sqrt(6 / (5 * C)) and fc1.abs().max() > 0.9 * math.sqrt(6 / (5 * C))
        p = model.patch_embed.proj.weight  # flattened (C, 3 p²)
        assert p.abs().max() <= math.sqrt(6 / (3 * 64 + C))
        assert all(torch.count_nonzero(b) == 0 for n, b in model.named_parameters() if n.endswith("bias"))
    assert 0.01 < mae.cls_token.std().item() < 0.04 and moco.cls_token.abs().max() < 1e-5
    assert build_backbone("vit_test").blocks[0].mlp.fc1.weight.std().item() == pytest.approx(0.02, rel=0.15)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(pos_embed="sin-cos"), "pos_embed must be one of learned, sincos, none, got 'sin-cos'"),
        (dict(init="xavier_normal"), "init must be one of trunc_normal, xavier, xavier_qkv, got 'xavier_normal'"),
        (dict(pos_embed="sincos", embed_dim=30, num_heads=2), "needs embed_dim divisible by 4, got 30"),
        (dict(freeze_patch_embed="yes"), "freeze_patch_embed must be true or false"),
        (dict(rel_pos_bias="per-block"), "rel_pos_bias must be one of none, shared, got 'per-block'"),
        (dict(layer_scale=-0.1), "layer_scale must be > 0"),
    ],
)
def test_new_fields_validated(overrides, match):
    with pytest.raises(ValueError, match=match):
        build_backbone("vit_test", **overrides)
    cfg = PretrainConfig(model=ModelConfig(backbone="vit_test", overrides=overrides))
    with pytest.raises(ConfigError, match=f"--model.overrides .*{match}"):
        check_config(cfg)
