"""CLIP: the temperature clamp, the 'sigmoid' (SigLIP) loss option, the task's outputs, pooling and padding, config checks,
optimizer metadata, and the pre-norm (CLIP layout) text and ViT towers. The losses against
hand-written references: ``tests/losses/test_contrastive.py``; DDP: ``tests/tasks/test_clip_ddp.py``; HF
parity: ``tests/converters/test_hf_clip.py``."""

import math

import pytest
import torch

from convergent.backbones import TextConfig, build_backbone
from convergent.heads.classifier import pool_tokens
from convergent.losses.contrastive import clip_loss, siglip_loss
from convergent.tasks.clip import CLIP
from convergent.tasks.configs import CLIPConfig
from convergent.tasks.registry import build_task

EOS = 999  # end-of-text id in clip_text_test's vocabulary of 1000


# --- the task ---------------------------------------------------------------------------------


def _task(image="vit_clip_test", **cfg) -> CLIP:
    torch.manual_seed(0)
    config = CLIPConfig(**{"text_backbone": "clip_text_test", "embed_dim": 16, **cfg})
    return build_task("clip", build_backbone(image), config)


def _batch(b: int = 4, length: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.arange(b) % (length - 2) + 3
    mask = (torch.arange(length) < lengths[:, None]).long()
    ids = torch.randint(1, EOS, (b, length), generator=g).masked_fill(mask == 0, 0)
    ids[torch.arange(b), lengths - 1] = EOS
    return {"image": torch.randn(b, 3, 32, 32, generator=g), "input_ids": ids, "attention_mask": mask}


def test_forward_outputs_and_backward():
    task = _task().train()
    assert task.text_backbone.config.pre_norm and task.text_backbone.config.causal
    out = task(_batch(), return_outputs=True)
    assert {"loss", "logit_scale", "acc_i2t", "acc_t2i"} <= out.keys()
    torch.testing.assert_close(out["logit_scale"], torch.tensor(1 / 0.07))
    assert 0 <= out["acc_i2t"] <= 1 and 0 <= out["acc_t2i"] <= 1
    assert out["image_embeds"].shape == out["text_embeds"].shape == (4, 16)
    torch.testing.assert_close(out["image_embeds"].norm(dim=-1), torch.ones(4))
    logits = out["logits_per_image"]
    ref = clip_loss(out["image_embeds"], out["text_embeds"], out["logit_scale"]).loss
    torch.testing.assert_close(out["loss"], ref)
    acc = (logits.argmax(1) == torch.arange(4)).float().mean()
    torch.testing.assert_close(out["acc_i2t"], acc)
    out["loss"].backward()
    unused = {n for n, p in task.named_parameters() if p.grad is None}
    assert unused == {"backbone.mask_token", "text_backbone.mask_token"}
    assert task.logit_scale.grad.abs() > 0


def test_logit_scale_clamp():
    task = _task(max_logit_scale=100.0)
    with torch.no_grad():
        task.logit_scale.fill_(math.log(500.0))
    scale = task.scale()
    torch.testing.assert_close(scale, torch.tensor(100.0))
    task(_batch())["loss"].backward()
    assert task.logit_scale.grad == 0  # above the bound: no gradient pushes it further
    with torch.no_grad():
        task.logit_scale.fill_(math.log(20.0))
    task.zero_grad()
    torch.testing.assert_close(task.scale(), torch.tensor(20.0))
    task(_batch())["loss"].backward()
    assert task.logit_scale.grad != 0


def test_text_embedding_ignores_padding_and_pools_the_eos_token():
    task = _task().eval()
    short = _batch(b=2, length=8)
    long = {k: torch.nn.functional.pad(v, (0, 5)) for k, v in short.items() if k != "image"}
    with torch.no_grad():
        a = task.encode_text(short["input_ids"], short["attention_mask"])
        b = task.encode_text(long["input_ids"], long["attention_mask"])
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
        tokens = task.text_backbone(short["input_ids"], attention_mask=short["attention_mask"])
    last = short["attention_mask"].sum(1) - 1
    assert torch.equal(pool_tokens(task.text_backbone, tokens, "eos", short["attention_mask"]), tokens[torch.arange(2), last])
    assert torch.equal(pool_tokens(task.text_backbone, tokens, "eos"), tokens[:, -1])
    with pytest.raises(ValueError, match="cls"):  # the causal tower's first token sees only itself
        pool_tokens(task.text_backbone, tokens, "cls")
    with pytest.raises(ValueError, match="'eos' pools the last real token of a text"):
        pool_tokens(task.backbone, task.backbone(_batch()["image"]), "eos")


def test_other_text_poolings():
    out = _task(text_pooling="avg")(_batch())
    assert torch.isfinite(out["loss"])
    with pytest.raises(ValueError, match="CLIPConfig.text_pooling"):  # causal tower: no summarising [CLS]
        _task(text_pooling="cls")


def test_swin_image_tower_and_image_pooling_check():
    out = _task(image="swin_test")(_batch())
    assert torch.isfinite(out["loss"])
    with pytest.raises(ValueError, match="class token"):
        _task(image="swin_test", image_pooling="cls")


def test_config_errors():
    with pytest.raises(ValueError, match="text_pooling"):
        _task(text_pooling="first")
    with pytest.raises(ValueError, match="image_pooling"):
        _task(image_pooling="max")
    with pytest.raises(ValueError, match="max_logit_scale"):
        _task(max_logit_scale=10.0)
    with pytest.raises(ValueError, match="needs an image backbone .TextTransformer reads text"):
        build_task("clip", build_backbone("text_test"), CLIPConfig(text_backbone="clip_text_test"))
    with pytest.raises(ValueError, match="text tower must be a text backbone; VisionTransformer reads images"):
        CLIP(build_backbone("vit_test"), CLIPConfig(), text_backbone=build_backbone("vit_test"))
    with pytest.raises(ValueError, match="needs pairs"):
        b = _batch()
        _task()({**b, "image": b["image"][:3]})


def test_text_overrides_and_prebuilt_text_tower():
    task = _task(text_overrides={"vocab_size": 50, "pad_token_id": 3})
    assert task.text_backbone.config.vocab_size == 50 and task.text_backbone.word_embed.num_embeddings == 50
    text = build_backbone("text_test")  # a BERT-layout tower works as well
    task = CLIP(build_backbone("vit_test"), CLIPConfig(embed_dim=8), text_backbone=text)
    assert task.text_backbone is text and task.text_proj.weight.shape == (8, 32)
    assert torch.isfinite(task({**_batch(), "input_ids": _batch()["input_ids"] % 1000})["loss"])


def test_weight_decay_and_layer_ids():
    task = _task()
    no_wd = task.no_weight_decay()
    assert {"logit_scale", "text_backbone.pos_embed.weight", "backbone.pos_embed", "text_backbone.norm.weight"} <= no_wd
    assert "text_backbone.word_embed.weight" not in no_wd and "image_proj.weight" not in no_wd
    top = task.backbone.num_layers - 1
    ids = {n: task.layer_id(n) for n, _ in task.named_parameters()}
    assert ids["text_backbone.word_embed.weight"] == 0 and ids["text_backbone.norm.weight"] == top
    assert ids["image_proj.weight"] == ids["logit_scale"] == top
    assert all(0 <= i <= top for i in ids.values())


# --- the CLIP-layout towers -------------------------------------------------------------------


def test_pre_norm_text_tower_is_causal_and_has_a_final_norm():
    torch.manual_seed(0)
    model = build_backbone(TextConfig(vocab_size=50, max_position=16, type_vocab_size=0, embed_dim=32, depth=2,
                                      num_heads=4, mlp_dim=64, dropout=0.0, attn_dropout=0.0, causal=True,
                                      pre_norm=True, pad_token_id=1)).eval()  # fmt: skip
    assert model.embed_norm is None and model.word_embed.padding_idx is None
    assert not any(k.startswith("embed_norm") for k in model.state_dict())
    x = torch.randint(0, 50, (2, 9))
    y = x.clone()
    y[:, 6:] = (y[:, 6:] + 1) % 50
    with torch.no_grad():
        final, blocks = model.forward_intermediates(x)
        other = model(y)
    torch.testing.assert_close(final, model.norm(blocks[-1]))  # block outputs before the final norm
    torch.testing.assert_close(final[:, :6], other[:, :6])  # later tokens do not change earlier ones
    assert not torch.allclose(final[:, 6:], other[:, 6:])
    assert model.layer_id("norm.weight") == model.num_layers - 1


def test_pre_norm_vit_has_norm_pre_and_no_patch_bias():
    model = build_backbone("vit_clip_test")
    assert model.patch_embed.proj.bias is None and isinstance(model.norm_pre, torch.nn.LayerNorm)
    assert model.layer_id("norm_pre.weight") == 0
    plain = build_backbone("vit_test")
    assert plain.patch_embed.proj.bias is not None and isinstance(plain.norm_pre, torch.nn.Identity)
    assert not any("norm_pre" in k for k in plain.state_dict())


def test_configure_text_takes_the_tokenizer_vocabulary_explicit_overrides_win():
    from convergent.tasks.clip import CLIP
    from convergent.tasks.configs import CLIPConfig

    cfg = CLIPConfig(text_backbone="clip_text_test", text_overrides={"pad_token_id": 7})
    CLIP.configure_text(cfg, {"vocab_size": 300, "pad_token_id": 0, "mask_token_id": 4, "max_length": 100})
    # clip_text_test has 64 positions: the table grows to the run's 100 tokens
    assert cfg.text_overrides == {"vocab_size": 300, "pad_token_id": 7, "mask_token_id": 4, "max_position": 100}


# --- SigLIP: loss 'sigmoid' -------------------------------------------------------------------------


def test_sigmoid_loss_is_siglip_with_its_initial_scale_and_bias():
    task = _task(loss="sigmoid").train()
    assert task.scale().item() == pytest.approx(10.0) and task.logit_bias.item() == -10.0  # SigLIP's init
    out = task(_batch(), return_outputs=True)
    ref = siglip_loss(out["image_embeds"], out["text_embeds"], task.scale(), task.logit_bias)
    torch.testing.assert_close(out["loss"], ref)
    assert out["logit_bias"].item() == -10.0 and set(out) >= {"acc_i2t", "acc_t2i", "logit_scale"}
    out["loss"].backward()
    assert task.logit_bias.grad.abs() > 0 and task.logit_scale.grad.abs() > 0
    assert "logit_bias" in task.no_weight_decay()  # 1-d head parameter


def test_softmax_clip_has_no_bias_and_keeps_its_init():
    task = _task()
    assert "logit_bias" not in task.state_dict() and task.scale().item() == pytest.approx(1 / 0.07)
    assert _task(loss="sigmoid", init_temperature=0.05, init_bias=-5.0).scale().item() == pytest.approx(20.0)
    with pytest.raises(ValueError, match="CLIPConfig.loss must be one of softmax, sigmoid"):
        _task(loss="sigmoids")
    with pytest.raises(ValueError, match="local_loss is an option of the 'softmax' loss"):
        _task(loss="sigmoid", local_loss=True)
