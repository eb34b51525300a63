"""ConvNeXt: parity with HF transformers ``ConvNextModel`` (both conversion directions, the
directory conversion path), mask token and ``output_mask``, resolution freedom, save/load,
contract details, and the objectives that run with it unchanged (or refuse it)."""

import pytest
import torch
import transformers

from convergent.backbones import backbone_config, build_backbone
from convergent.backbones.convnext import ConvNeXt
from convergent.converters import hf, hf_convnext
from convergent.tasks.configs import ClassifyConfig, CLIPConfig, Data2VecConfig, MoCoV3Config, SimMIMConfig
from convergent.tasks.registry import build_task
from tests.conftest import assert_grads_match, randomize_, rel_err
from tests.task_helpers import train_steps


def hf_model(img: int = 32, depths=(1, 2), dims=(8, 16), **kw) -> transformers.ConvNextModel:
    """A tiny HF ConvNeXt with every parameter (layer scales and norms included) random."""
    cfg = transformers.ConvNextConfig(
        image_size=img, patch_size=4, num_stages=len(depths), depths=list(depths), hidden_sizes=list(dims), **kw
    )
    return randomize_(transformers.ConvNextModel(cfg)).eval()


def convert_from(hm: transformers.ConvNextModel) -> ConvNeXt:
    cfg = hf_convnext.config_from_hf(hm.config.to_dict())
    ours = build_backbone(cfg).eval()
    ours.load_weights(hf_convnext.state_dict_from_hf(hm.state_dict(), cfg))
    return ours


def convert_to(ours: ConvNeXt) -> transformers.ConvNextModel:
    hm = transformers.ConvNextModel(transformers.ConvNextConfig(**hf_convnext.config_to_hf(ours.config))).eval()
    hm.load_state_dict(hf_convnext.state_dict_to_hf(ours.state_dict(), ours.config), strict=True)
    return hm


def flat(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, H*W, C)


def pair(direction: str, **kw) -> tuple[ConvNeXt, transformers.ConvNextModel]:
    if direction == "from_hf":
        hm = hf_model(**kw)
        return convert_from(hm), hm
    ours = randomize_(build_backbone("convnext_test", drop_path=0.0)).eval()
    return ours, convert_to(ours)


# --- parity with HF -----------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["from_hf", "to_hf"])
def test_parity_with_hf(direction):
    ours, hm = pair(direction)
    x = torch.randn(2, 3, 32, 32)
    xh, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_h = hm(pixel_values=xh)
    tokens = ours(xo)  # (B, 16, 16)
    ref = flat(out_h.last_hidden_state)
    assert tokens.shape == ref.shape == (2, 16, 16)
    assert (tokens - ref).abs().max() <= 1e-5
    assert (ours.pooled(tokens) - out_h.pooler_output).abs().max() <= 1e-5
    w = torch.randn_like(tokens)
    ((ref * w).sum() + out_h.pooler_output.square().sum()).backward()
    ((tokens * w).sum() + ours.pooled(tokens).square().sum()).backward()
    assert rel_err(xo.grad, xh.grad) <= 1e-4
    grads_h = {k: p.grad for k, p in hm.named_parameters()}
    grads_o = hf_convnext.state_dict_to_hf({k: p.grad for k, p in ours.named_parameters()}, ours.config)
    assert_grads_match(grads_o, grads_h)


def test_intermediates_are_hfs_stage_outputs():
    ours, hm = pair("from_hf", depths=(2, 1, 2), dims=(8, 12, 16))
    x = torch.randn(2, 3, 32, 32)
    hidden = hm(pixel_values=x, output_hidden_states=True).hidden_states  # stem, then each stage
    final, inter = ours.forward_intermediates(x)
    assert [t.shape for t in inter] == [(2, 64, 8)] * 2 + [(2, 16, 12)] + [(2, 4, 16)] * 2
    stage_ends = [1, 2, 4]  # the last block of each stage
    for h, k in zip(hidden[1:], stage_ends):
        assert (inter[k] - flat(h)).abs().max() <= 1e-5
    assert torch.equal(final, inter[-1])  # no per-token norm after the last block


@pytest.mark.parametrize("img", [40, 56])
def test_parity_at_sizes_the_downsampling_floors(img):
    # 40 px: maps 10 -> 5 -> 2 (HF's strided convolutions drop the odd row/column)
    ours, hm = pair("from_hf", img=32, depths=(1, 1, 1), dims=(8, 12, 16))
    x = torch.randn(1, 3, img, img)
    ref = hm(pixel_values=x)
    tokens = ours(x)
    assert tokens.shape == flat(ref.last_hidden_state).shape
    assert (tokens - flat(ref.last_hidden_state)).abs().max() <= 1e-5
    assert (ours.pooled(tokens) - ref.pooler_output).abs().max() <= 1e-5


def test_without_layer_scale_and_other_activation():
    hm = hf_model(layer_scale_init_value=0.0, hidden_act="relu", layer_norm_eps=1e-6)
    ours = convert_from(hm)
    assert ours.config.layer_scale_init == 0 and ours.stages[0].blocks[0].gamma is None
    x = torch.randn(2, 3, 32, 32)
    ref = hm(pixel_values=x)
    assert (ours(x) - flat(ref.last_hidden_state)).abs().max() <= 1e-5
    assert "encoder.stages.0.layers.0.layer_scale_parameter" not in convert_to(ours).state_dict()


# --- converter ------------------------------------------------------------------------------------


def test_ours_to_hf_to_ours_is_bit_identical():
    ours = randomize_(build_backbone("convnext_test"))
    cfg = ours.config
    hf_sd = hf_convnext.state_dict_to_hf(ours.state_dict(), cfg)
    assert "mask_token" not in hf_sd  # HF ConvNeXt has none
    back = hf_convnext.state_dict_from_hf({"convnext." + k: v for k, v in hf_sd.items()}, cfg)
    for k, v in ours.state_dict().items():
        assert k == "mask_token" or torch.equal(back[k], v), k
    assert torch.equal(back["mask_token"], torch.zeros(1, 1, 8))  # HF's missing token starts at zero
    assert hf_convnext.config_from_hf(hf_convnext.config_to_hf(cfg)) == cfg


@pytest.mark.parametrize("name", ["convnext_test", "convnext_micro", "convnext_tiny", "convnext_base"])
def test_config_round_trip(name):
    cfg = backbone_config(name)
    assert hf_convnext.config_from_hf(hf_convnext.config_to_hf(cfg)) == cfg


def test_unknown_keys_and_unsupported_configs_are_reported():
    hm = hf_model()
    cfg = hf_convnext.config_from_hf(hm.config.to_dict())
    assert cfg.norm_eps == 1e-6 and cfg.head_norm_eps == 1e-12  # HF's hard-coded / configured eps
    sd = dict(hm.state_dict(), **{"encoder.stages.0.layers.0.surprise": torch.zeros(1)})
    with pytest.raises(KeyError, match="surprise"):
        hf_convnext.state_dict_from_hf(sd, cfg)
    sd = {"convnext." + k: v for k, v in hm.state_dict().items()} | {"classifier.weight": torch.zeros(1)}
    assert "classifier.weight" not in hf_convnext.state_dict_from_hf(sd, cfg)  # heads are skipped
    with pytest.raises(ValueError, match="hard-codes LayerNorm eps"):
        hf_convnext.config_to_hf(backbone_config("convnext_test", norm_eps=1e-5))
    with pytest.raises(ValueError, match="num_stages"):
        hf_convnext.config_from_hf({**hm.config.to_dict(), "num_stages": 3})


def test_directory_conversion_both_ways(tmp_path):
    """HF directory → ``hf_to_convergent`` → our directory → ``convergent_to_hf`` → HF
    ``from_pretrained``: all three models agree."""
    hm = transformers.ConvNextForImageClassification(
        transformers.ConvNextConfig(image_size=32, num_stages=2, depths=[1, 2], hidden_sizes=[8, 16], num_labels=3)
    )
    randomize_(hm).eval().save_pretrained(tmp_path / "hf")
    result = hf.hf_to_convergent(tmp_path / "hf", tmp_path / "ours")
    assert result.ignored == ["classifier.bias", "classifier.weight"]
    ours = ConvNeXt.from_pretrained(tmp_path / "ours").eval()
    hf.convergent_to_hf(tmp_path / "ours", tmp_path / "back")
    back = transformers.ConvNextModel.from_pretrained(tmp_path / "back").eval()
    x = torch.randn(2, 3, 32, 32)
    ref = hm.convnext(pixel_values=x)
    tokens = ours(x)
    for out in (ref, back(pixel_values=x)):
        assert (tokens - flat(out.last_hidden_state)).abs().max() <= 1e-5
        assert (ours.pooled(tokens) - out.pooler_output).abs().max() <= 1e-5


# --- mask token -------------------------------------------------------------------------------


def stem_map(model: ConvNeXt, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The input of the first block: the (masked) stem output ``(B, C, H/p, W/p)``."""
    seen = []
    hook = model.stages[0].blocks[0].register_forward_hook(lambda m, args, out: seen.append(args[0]))
    model(x, mask=mask)
    hook.remove()
    return seen[0]


def test_mask_token_replaces_exactly_the_masked_stem_outputs():
    model = randomize_(build_backbone("convnext_test", drop_path=0.0)).eval()
    x = torch.randn(2, 3, 32, 32)
    mask = torch.rand(2, 64) < 0.5
    plain, masked = stem_map(model, x, None), stem_map(model, x, mask)  # (2, 8, 8, 8)
    where = mask.view(2, 1, 8, 8).expand_as(plain)
    assert torch.equal(masked[~where], plain[~where])  # unmasked cells untouched
    token = model.mask_token.view(1, 8, 1, 1).expand_as(plain)
    assert torch.equal(masked[where], token[where])  # masked cells hold the mask token
    assert (model(x, mask=mask) - model(x)).abs().max() > 1e-3
    model(x, mask=mask).square().sum().backward()
    assert model.mask_token.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="mask of shape"):
        model(x, mask=torch.zeros(2, 10, dtype=torch.bool))


def test_output_mask_is_exact_for_whole_units():
    model = build_backbone("convnext_test")  # stem 4, two stages: one final token per 2x2 cells
    x = torch.zeros(3, 3, 32, 32)
    grid, u = model.mask_grid(x), model.mask_unit
    assert grid == (8, 8) and u == 2 and model.output_stride == 8
    tokens = torch.rand(3, 16) < 0.5  # (B, 4*4) final tokens
    mask = tokens.view(3, 4, 4).repeat_interleave(2, 1).repeat_interleave(2, 2).flatten(1)  # (B, 64)
    assert torch.equal(model.output_mask(mask, grid), tokens)
    # a token is hidden only when all its cells are; cells the downsampling drops count for none
    m = torch.zeros(1, 5, 5, dtype=torch.bool)  # a 5x5 grid -> 2x2 tokens, last row/column dropped
    m[0, :2, :2] = True  # token (0, 0): all four cells
    m[0, 2, 2] = True  # token (1, 1): one of four
    m[0, 4, :] = True  # the dropped row
    assert model.output_mask(m.flatten(1), (5, 5)).tolist() == [[True, False, False, False]]


def test_swin_output_mask_unchanged_by_the_shared_function():
    swin = build_backbone("swinv2_test")
    m = torch.zeros(1, 3, 3, dtype=torch.bool)  # 3x3 -> 2x2 tokens, padded; padding counts as hidden
    m[0, :2, :2] = True
    m[0, 2, 2] = True
    m[0, 1, 2] = True
    assert swin.output_mask(m.flatten(1), (3, 3)).tolist() == [[True, False, False, True]]


# --- resolution, save / load, contract --------------------------------------------------------------


def test_other_resolutions_work():
    model = build_backbone("convnext_test").eval()
    for side, n in ((64, 64), (48, 36), (96, 144)):
        tokens = model(torch.randn(1, 3, side, side))
        assert tokens.shape == (1, n, 16)
    model = build_backbone("convnext_test").train()
    x = torch.randn(2, 3, 64, 64)
    mask = torch.zeros(2, 256, dtype=torch.bool)
    mask[:, ::3] = True
    model.pooled(model(x, mask=mask)).square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_save_load_round_trip(tmp_path):
    model = randomize_(build_backbone("convnext_test"), std=0.05).eval()
    model.save_pretrained(tmp_path)
    again = ConvNeXt.from_pretrained(tmp_path).eval()
    assert again.config == model.config
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(again(x), model(x))
    big = ConvNeXt.from_pretrained(tmp_path, img_size=64).eval()  # no position tables to adapt
    assert big.output_grid == (8, 8) and torch.equal(big(x), model(x))


def test_contract_declarations():
    model = build_backbone("convnext_test", depths=(1, 2, 2), dims=(8, 12, 16))
    assert [(f.num_chs, f.reduction) for f in model.feature_info] == [(8, 4), (12, 8), (16, 16)]
    assert model.output_stride == 16 and model.output_grid == (2, 2) and model.final_stage_depth == 2
    assert model.num_prefix_tokens == 0 and not model.first_token_summarises
    assert model.supports_mask_token and not model.supports_token_drop and not model.supports_joint_tokens
    assert not model.supports_patch_tokens  # final tokens at the last stage, coarser than the stem's patches
    assert (model.norm_eps, model.act, model.dropout) == (1e-6, "gelu", 0.0)
    ids = {n: model.layer_id(n) for n, _ in model.named_parameters()}
    assert ids["patch_embed.proj.weight"] == ids["patch_embed.norm.bias"] == ids["mask_token"] == 0
    assert ids["stages.0.blocks.0.dwconv.weight"] == 1
    assert ids["stages.1.downsample.conv.weight"] == ids["stages.1.blocks.0.mlp.fc1.weight"] == 2
    assert ids["stages.2.blocks.1.gamma"] == 5
    assert ids["norm.weight"] == model.num_layers - 1 == 6
    nwd = model.no_weight_decay()
    assert {"mask_token", "stages.0.blocks.0.gamma", "norm.weight", "stages.1.downsample.conv.bias"} <= nwd
    assert "stages.0.blocks.0.dwconv.weight" not in nwd and "stages.0.blocks.0.mlp.fc1.weight" not in nwd


def test_init_is_the_official_one():
    model = build_backbone("convnext_tiny")
    blk = model.stages[2].blocks[0]
    assert torch.equal(blk.gamma, torch.full((384,), 1e-6))
    assert blk.mlp.fc1.bias.abs().max() == 0 and blk.dwconv.bias.abs().max() == 0
    assert abs(blk.mlp.fc1.weight.std().item() - 0.02) < 2e-3  # truncated normal, std 0.02
    assert abs(model.stages[1].downsample.conv.weight.std().item() - 0.02) < 2e-3


def test_compiles_without_graph_breaks():
    model = build_backbone("convnext_test").eval()
    x, mask = torch.randn(2, 3, 32, 32), torch.rand(2, 64) < 0.5
    compiled = torch.compile(model.forward_intermediates, fullgraph=True, backend="eager")
    final, inter = compiled(x, mask=mask, indices=2)
    ref, ref_inter = model.forward_intermediates(x, mask=mask, indices=2)
    assert torch.equal(final, ref) and all(torch.equal(a, b) for a, b in zip(inter, ref_inter))


# --- the objectives, unchanged ---------------------------------------------------------------------

EOS = 999  # end-of-text id in clip_text_test's vocabulary of 1000


def _images(b: int = 4) -> torch.Tensor:
    return torch.randn(b, 3, 32, 32)


def _clip_batch(b: int = 4, length: int = 8) -> dict:
    ids = torch.randint(1, EOS, (b, length))
    ids[:, -1] = EOS
    return {"image": _images(b), "input_ids": ids, "attention_mask": torch.ones(b, length, dtype=torch.long)}


TASKS = {
    "simmim": (SimMIMConfig(mask_patch_size=8), lambda: {"image": _images()}),
    "mocov3": (MoCoV3Config(hidden_dim=32, out_dim=16), lambda: {"image": _images(), "image2": _images()}),
    "clip": (CLIPConfig(text_backbone="clip_text_test", embed_dim=16), _clip_batch),
    "data2vec": (Data2VecConfig(), lambda: {"image": _images()}),
    "classify": (
        ClassifyConfig(num_classes=3, pooling="default"),
        lambda: {"image": _images(), "label": torch.arange(4) % 3},
    ),
}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_takes_a_step(name):
    config, batch = TASKS[name]
    task = build_task(name, build_backbone("convnext_test"), config).train()
    before = {k: v.clone() for k, v in task.backbone.state_dict().items()}
    losses, out = train_steps(task, batch(), steps=1, lr=1e-3)
    assert torch.isfinite(torch.tensor(losses)).all()
    changed = [k for k, v in task.backbone.state_dict().items() if not torch.equal(v, before[k])]
    assert "stages.1.blocks.1.mlp.fc2.weight" in changed  # the backbone was trained
    if name in ("simmim", "data2vec"):
        assert task.backbone.mask_token.grad.abs().sum() > 0


@pytest.mark.parametrize("name,flag", [("mae", "token_drop"), ("vilt", "joint_tokens")])
def test_task_refused_with_a_capability_error(name, flag):
    with pytest.raises(ValueError, match=f"task '{name}' needs a backbone with {flag} .ConvNeXt has none"):
        build_task(name, build_backbone("convnext_test"))
