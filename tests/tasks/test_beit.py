"""BEiT: the loss equals HF ``BeitForMaskedImageModeling``'s given the same weights, images,
mask and target ids (fp32, 1e-5); the targets come from the frozen tokenizer (which neither
trains nor updates its codebook); refusals; the preset builds with its tokenizer."""

import pytest
import torch

from convergent.backbones import build_backbone
from convergent.tasks.beit import BEiT
from convergent.tasks.configs import BEiTConfig
from tests.backbones.test_vit_beit_options import TINY, beit, randomize_, to_beit
from tests.preset_helpers import stand_in_tokenizer

transformers = pytest.importorskip("transformers")

BEIT_VIT = dict(TINY, pos_embed="none", rel_pos_bias="shared", layer_scale=0.1)


def task(**vit) -> BEiT:
    torch.manual_seed(0)
    backbone = build_backbone("vit_test", **{**BEIT_VIT, **vit})
    c = backbone.config
    return BEiT(backbone, BEiTConfig(min_block_patches=2), stand_in_tokenizer(c.patch_size, c.img_size))


def hf_mim(model: BEiT):
    """HF ``BeitForMaskedImageModeling`` with ``model``'s weights: the ViT's final norm is the MIM
    head's ``layernorm`` (``BeitModel``'s own is then the identity: ``use_mean_pooling``)."""
    backbone = model.backbone
    config = beit(backbone).config
    config.use_mean_pooling, config.use_mask_token, config.vocab_size = True, True, model.tokenizer.num_codes
    hf = transformers.BeitForMaskedImageModeling(config).eval()
    sd = to_beit(backbone.state_dict(), backbone.config.depth)
    state = {("" if k.startswith("layernorm.") else "beit.") + k: v for k, v in sd.items()}
    state["beit.embeddings.mask_token"] = backbone.mask_token.detach().clone()
    state["lm_head.weight"], state["lm_head.bias"] = model.head.weight.detach().clone(), model.head.bias.detach().clone()
    hf.load_state_dict(state, strict=True)
    return hf


@pytest.mark.parametrize("vit", [{}, {"pos_embed": "learned"}], ids=["beit-options", "absolute-positions"])
def test_loss_matches_hf_beit_for_masked_image_modeling(vit):
    model = task(**vit).eval()
    randomize_(model.backbone)
    with torch.no_grad():
        model.backbone.mask_token.normal_(0, 0.5)
        model.head.weight.normal_(0, 0.3)
        model.head.bias.normal_(0, 0.3)
    hf = hf_mim(model)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 32, 32, generator=g)
    n = (32 // 8) ** 2
    mask = torch.rand(3, n, generator=g) < 0.5
    mask[:, 0] = True  # every image hides something
    ids = torch.randint(0, model.tokenizer.num_codes, (3, n), generator=g)
    with torch.no_grad():
        ours = model({"image": x, "mask": mask, "target_ids": ids})
        theirs = hf(pixel_values=x, bool_masked_pos=mask, labels=ids[mask])
    torch.testing.assert_close(ours["loss"], theirs.loss, rtol=1e-5, atol=1e-5)
    accuracy = (theirs.logits[mask].argmax(-1) == ids[mask]).float().mean()
    assert ours["accuracy"].item() == pytest.approx(accuracy.item())


def test_targets_come_from_the_frozen_tokenizer():
    model = task().train()
    assert not model.tokenizer.training and not any(p.requires_grad for p in model.tokenizer.parameters())
    codebook = model.tokenizer.quantizer.codebook.clone()
    x = torch.randn(4, 3, 32, 32)
    mask = torch.zeros(4, 16, dtype=torch.bool)
    mask[:, :6] = True
    given = model({"image": x, "mask": mask, "target_ids": model.tokenizer.encode(x).flatten(1)})
    drawn = model({"image": x, "mask": mask})  # the tokenizer's ids: the same loss
    torch.testing.assert_close(given["loss"], drawn["loss"])
    drawn["loss"].backward()
    assert torch.equal(model.tokenizer.quantizer.codebook, codebook)  # no EMA update in training mode
    assert model.head.weight.grad is not None and model.backbone.mask_token.grad is not None
    out = model({"image": x})  # blockwise masks drawn from the global RNG
    assert 0 < out["masked_patches"].item() <= 0.5 and torch.isfinite(out["loss"])


def test_refusals():
    backbone = build_backbone("vit_test", **BEIT_VIT)
    with pytest.raises(ValueError, match="one code per 4 px but the backbone one patch per 8 px"):
        BEiT(backbone, BEiTConfig(), stand_in_tokenizer(4, 32))
    with pytest.raises(ValueError, match="needs a backbone with patch_tokens"):
        BEiT(build_backbone("swinv2_test"), BEiTConfig(), stand_in_tokenizer(2, 32))
    model = task()
    with pytest.raises(ValueError, match=r"batch\['mask'\] must be \(B=2, 16\)"):
        model({"image": torch.randn(2, 3, 32, 32), "mask": torch.zeros(2, 15, dtype=torch.bool)})
    with pytest.raises(ValueError, match="the visual tokens form a"):
        model({"image": torch.randn(2, 3, 32, 32), "target_ids": torch.zeros(2, 9, dtype=torch.long)})


def test_a_tiny_run_of_the_preset_with_a_saved_tokenizer(tmp_path):
    import json

    from convergent.cli import main
    from convergent.workflows.assemble import load_task_from_run

    stand_in_tokenizer(4, 32).save_pretrained(tmp_path / "tok")
    args = ["pretrain", "--preset", "beit-vit-fmnist", "--task.beit.tokenizer", str(tmp_path / "tok"),
            "--model.overrides", "{pos_embed: none, rel_pos_bias: shared, layer_scale: 0.1, depth: 2, embed_dim: 32, "
            "num_heads: 2, mlp_dim: 64}", "--eval.layer", "1", "--data.limit", "64", "--data.batch_size", "16",
            "--trainer.max_steps", "2", "--optim.warmup_steps", "1", "--eval.limit_train", "64",
            "--trainer.out_dir", str(tmp_path), "--trainer.run_name", "b"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["status"] == "ok" and "knn_acc" in summary
    log = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert {"accuracy", "masked_patches"} <= set(log[-1])
    task, _, _ = load_task_from_run(tmp_path / "b")  # the checkpoint holds the tokenizer it trained with
    assert isinstance(task, BEiT) and task.tokenizer.num_codes == 16
