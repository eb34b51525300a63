"""Parity of convergent's ``clip`` task with HF ``transformers.CLIPModel`` through the
converter, at tiny size with noticeable random weights (so a wrong mapping cannot pass):
image and text embeddings, logits, loss and gradients; state dicts round-trip exactly."""

import pytest
import torch

from convergent.backbones import build_backbone
from convergent.converters import hf_bert, hf_vit
from convergent.converters.hf_clip import (
    CLIPTowers,
    config_from_hf,
    config_to_hf,
    state_dict_from_hf,
    state_dict_to_hf,
    task_config_fields,
    vision_state_dict_from_hf,
)
from convergent.tasks.clip import CLIP
from convergent.tasks.configs import CLIPConfig

transformers = pytest.importorskip("transformers")

VOCAB, BOS, EOS, PAD = 99, 97, 98, 1
TEXT = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=16, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)  # fmt: skip
VISION = dict(image_size=32, patch_size=8, hidden_size=24, intermediate_size=40, num_hidden_layers=2,
              num_attention_heads=4)  # fmt: skip


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Normal(0, 0.2) for every tensor; LayerNorm weights 1 + Normal(0, 0.2)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.2
            if name == "logit_scale":
                p.fill_(2.0)
            else:
                p.copy_(noise + 1.0 if name.endswith("weight") and p.ndim == 1 else noise)


def _hf_model(seed: int = 0, **text):
    config = transformers.CLIPConfig(text_config={**TEXT, **text}, vision_config=VISION, projection_dim=20)
    config._attn_implementation = "eager"  # the plain softmax(QK^T) reference
    model = transformers.CLIPModel(config)
    _randomize(model, seed)
    return model.eval()


def _ours_from_hf(hf) -> CLIP:
    towers = config_from_hf(hf.config.to_dict())
    task = CLIP(build_backbone(towers.vision), CLIPConfig(**task_config_fields(towers)))
    task.load_state_dict(state_dict_from_hf(hf.state_dict(), towers), strict=True)
    return task.eval()


def _inputs(b: int = 4, length: int = 12, seed: int = 1):
    """Images and right-padded texts ``BOS ... EOS PAD...`` of different lengths."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, BOS, (b, length), generator=g)
    lengths = torch.tensor([length, 7, 3, 10])[:b]
    mask = (torch.arange(length) < lengths[:, None]).long()
    ids = ids.masked_fill(mask == 0, PAD)
    ids[:, 0] = BOS
    ids[torch.arange(b), lengths - 1] = EOS
    return torch.randn(b, 3, 32, 32, generator=g), ids, mask


def _compare(hf, task, images, ids, mask) -> None:
    out = hf(input_ids=ids, pixel_values=images, attention_mask=mask, return_loss=True)
    ours = task({"image": images, "input_ids": ids, "attention_mask": mask}, return_outputs=True)
    assert (ours["image_embeds"] - out.image_embeds).abs().max() <= 1e-5
    assert (ours["text_embeds"] - out.text_embeds).abs().max() <= 1e-5
    assert (ours["logits_per_image"] - out.logits_per_image).abs().max() <= 1e-4
    assert abs(ours["loss"].item() - out.loss.item()) <= 1e-5


@pytest.mark.parametrize("eos_token_id", [EOS, 2])  # 2: pre-2023 configs, HF pools at the highest id
def test_hf_to_ours_parity(eos_token_id):
    hf = _hf_model(eos_token_id=eos_token_id)
    task = _ours_from_hf(hf)
    cfg = task.text_backbone.config
    assert cfg.pre_norm and cfg.causal and cfg.act == "quick_gelu" and cfg.norm_eps == 1e-5
    assert task.backbone.config.pre_norm and task.backbone.patch_embed.proj.bias is None
    with torch.no_grad():
        _compare(hf, task, *_inputs())


def test_ours_to_hf_parity_and_exact_round_trips():
    torch.manual_seed(0)
    task = CLIP(build_backbone("vit_clip_test"), CLIPConfig(text_backbone="clip_text_test", embed_dim=16)).eval()
    _randomize(task, seed=3)
    towers = CLIPTowers(task.backbone.config, task.text_backbone.config, 16)
    hf_cfg = config_to_hf(towers)
    assert hf_cfg["text_config"]["eos_token_id"] == 999 and hf_cfg["text_config"]["bos_token_id"] == 998
    hf = transformers.CLIPModel(transformers.CLIPConfig(**hf_cfg))
    hf.load_state_dict(state_dict_to_hf(task.state_dict(), towers), strict=True)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, 998, (3, 9), generator=g)
    ids[:, -1] = 999  # end-of-text last, no padding
    with torch.no_grad():
        _compare(hf.eval(), task, torch.randn(3, 3, 32, 32, generator=g), ids, torch.ones_like(ids))
    # HF → ours → HF is the identity, on configs and on every tensor
    back = config_from_hf(hf.config.to_dict())
    assert back.vision == towers.vision and back.text == towers.text and back.embed_dim == 16
    sd = hf.state_dict()
    again = state_dict_to_hf(state_dict_from_hf(sd, back), back)
    assert again.keys() == sd.keys()
    assert all(torch.equal(again[k], sd[k]) for k in sd)


def test_gradient_parity():
    hf = _hf_model()
    task = _ours_from_hf(hf)
    images, ids, mask = _inputs()
    hf(input_ids=ids, pixel_values=images, attention_mask=mask, return_loss=True).loss.backward()
    task({"image": images, "input_ids": ids, "attention_mask": mask})["loss"].backward()
    towers = config_from_hf(hf.config.to_dict())
    # the mapping is a renaming, reshape and concatenation: it maps gradients as it maps weights
    hf_grads = state_dict_from_hf({n: p.grad for n, p in hf.named_parameters()}, towers)
    for name, p in task.named_parameters():
        if name.endswith("mask_token"):
            assert p.grad is None
            continue
        ref = hf_grads[name]
        err = ((p.grad - ref).norm() / ref.norm().clamp_min(1e-8)).item()
        assert err <= 1e-4, (name, err)


def test_vision_tower_alone():
    hf = _hf_model()
    towers = config_from_hf(hf.config.to_dict())
    vit = build_backbone(towers.vision).eval()
    vit.load_weights(vision_state_dict_from_hf(hf.state_dict(), towers.vision))
    images = _inputs()[0]
    with torch.no_grad():
        pooled = hf.vision_model(pixel_values=images).pooler_output
        assert (vit.pooled(vit(images)) - pooled).abs().max() <= 1e-5


def test_errors_name_the_problem():
    hf = _hf_model()
    towers = config_from_hf(hf.config.to_dict())
    sd = dict(hf.state_dict())
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="extra.weight"):
        state_dict_from_hf(sd, towers)
    with pytest.raises(ValueError, match="model_type"):
        config_from_hf({"model_type": "siglip"})
    with pytest.raises(ValueError, match="not a HF CLIP layout"):
        config_to_hf(CLIPTowers(build_backbone("vit_test").config, towers.text, 16))
    # the CLIP-layout towers do not pass for HF ViT / BERT
    with pytest.raises(ValueError, match="pre_norm"):
        hf_vit.config_to_hf(towers.vision)
    with pytest.raises(ValueError, match="pre-norm"):
        hf_bert.config_to_hf(towers.text)
