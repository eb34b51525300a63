"""MLM: loss, logits and gradients equal HF ``BertForMaskedLM`` on converted weights and the
same corrupted input (padding included); the LM head converts both ways; BERT's 80/10/10
corruption in proportion; special tokens and padding are never chosen; clear errors."""

import pytest
import torch

from convergent.backbones import TextConfig, build_backbone
from convergent.converters.hf_bert import (
    config_to_hf,
    lm_head_from_hf,
    lm_head_to_hf,
    state_dict_from_hf,
    state_dict_to_hf,
)
from convergent.tasks.configs import MLMConfig
from convergent.tasks.mlm import MLM, corrupt_tokens
from convergent.tasks.registry import build_task
from tests.conftest import randomize_

transformers = pytest.importorskip("transformers")

VOCAB, MASK_ID, PAD_ID, CLS_ID, SEP_ID = 61, 3, 0, 1, 2
ATOL = 1e-5


def tiny_cfg(**kw) -> TextConfig:
    base = dict(
        vocab_size=VOCAB, max_position=16, type_vocab_size=2, embed_dim=32, depth=2, num_heads=4, mlp_dim=48,
        dropout=0.0, attn_dropout=0.0, pad_token_id=PAD_ID, mask_token_id=MASK_ID, pooler=False,
    )  # fmt: skip
    return TextConfig(**{**base, **kw})


def hf_pair(cfg: TextConfig, cls_name: str, attn: str = "sdpa"):
    """A randomised HF model (``cls_name``) and our task on the converted weights."""
    hc = transformers.BertConfig(**config_to_hf(cfg), attn_implementation=attn)
    hf = randomize_(getattr(transformers, cls_name)(hc)).eval()
    backbone = build_backbone(cfg)
    backbone.load_weights(state_dict_from_hf(hf.state_dict(), cfg))
    task = build_task("causal-lm" if cfg.causal else "mlm", backbone).eval()
    task.head.load_state_dict(lm_head_from_hf(hf.state_dict()))
    return hf, task


def text_batch(seed: int = 1, b: int = 3, length: int = 12) -> dict:
    """[CLS] words [SEP] [PAD]...: rows of 12, 9 and 6 real tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (b, length), generator=g)
    am = torch.ones(b, length, dtype=torch.long)
    for row, n in enumerate((length, 9, 6)[:b]):
        am[row, n:] = 0
        ids[row, n - 1] = SEP_ID
    ids[:, 0] = CLS_ID
    ids = ids.masked_fill(am == 0, PAD_ID)
    special = (ids == CLS_ID) | (ids == SEP_ID) | (am == 0)
    return {"input_ids": ids, "attention_mask": am, "special_tokens_mask": special}


def hf_inputs(batch: dict, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupted ids and HF labels from the task's own 80/10/10 path (a fixed RNG)."""
    torch.manual_seed(seed)
    chosen = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
    chosen[0, [1, 4, 7, 10]] = chosen[1, [2, 3]] = chosen[2, [1, 4]] = True
    return corrupt_tokens(batch["input_ids"], chosen, MASK_ID, VOCAB, 0.5, 0.25)


def assert_grads_close(task, hf, pairs: dict[str, str], rtol: float = 1e-4) -> None:
    """Gradients of our ``pairs`` keys equal HF's (max-abs error relative to HF's max)."""
    ours, theirs = dict(task.named_parameters()), dict(hf.named_parameters())
    for mine, ref in pairs.items():
        g, want = ours[mine].grad, theirs[ref].grad
        err = (g - want).abs().max() / want.abs().max()
        assert err <= rtol, f"{mine}: relative gradient error {err:.2e}"


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_loss_and_logits_parity_with_hf(attn):
    hf, task = hf_pair(tiny_cfg(), "BertForMaskedLM", attn)
    batch = text_batch()
    ids, labels = hf_inputs(batch)
    assert (ids != batch["input_ids"]).any()
    ref = hf(input_ids=ids, attention_mask=batch["attention_mask"], labels=labels)
    out = task({**batch, "input_ids": ids, "labels": labels}, return_outputs=True)
    assert ref.logits.abs().mean() > 0.1  # a non-degenerate reference
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(out["logits"][real], ref.logits[real], atol=ATOL, rtol=0)
    assert abs(out["loss"].item() - ref.loss.item()) <= ATOL
    assert out["num_predictions"].item() == 8
    picked = ref.logits[labels != -100].argmax(-1) == labels[labels != -100]
    assert out["accuracy"].item() == pytest.approx(picked.float().mean().item())
    # the training path (head on the chosen positions only) gives the same loss
    assert abs(task({**batch, "input_ids": ids, "labels": labels})["loss"].item() - ref.loss.item()) <= ATOL


def test_own_corruption_matches_hf_on_the_same_inputs():
    """The task's draw (global RNG) fed to HF as ids + labels gives the same loss."""
    hf, task = hf_pair(tiny_cfg(), "BertForMaskedLM")
    batch = text_batch(seed=5)
    out = task(batch, return_outputs=True)
    assert out["num_predictions"].item() == round(0.15 * 10) + round(0.15 * 7) + round(0.15 * 4)
    ref = hf(input_ids=out["input_ids"], attention_mask=batch["attention_mask"], labels=out["labels"])
    assert abs(out["loss"].item() - ref.loss.item()) <= ATOL


def test_gradient_parity_with_hf():
    hf, task = hf_pair(tiny_cfg(), "BertForMaskedLM")
    batch = text_batch(seed=3)
    ids, labels = hf_inputs(batch, seed=4)
    hf(input_ids=ids, attention_mask=batch["attention_mask"], labels=labels).loss.backward()
    task({**batch, "input_ids": ids, "labels": labels})["loss"].backward()
    p = "cls.predictions."
    pairs = {
        "backbone.word_embed.weight": "bert.embeddings.word_embeddings.weight",  # input and output use
        "backbone.blocks.0.attn.proj.weight": "bert.encoder.layer.0.attention.output.dense.weight",
        "backbone.blocks.1.mlp.fc1.weight": "bert.encoder.layer.1.intermediate.dense.weight",
        "head.dense.weight": f"{p}transform.dense.weight",
        "head.norm.weight": f"{p}transform.LayerNorm.weight",
        "head.bias": f"{p}bias",
    }
    assert_grads_close(task, hf, pairs)


def test_lm_head_round_trip_loads_strictly_into_hf():
    cfg = tiny_cfg()
    task = MLM(randomize_(build_backbone(cfg)), MLMConfig())
    randomize_(task.head)
    hf = transformers.BertForMaskedLM(transformers.BertConfig(**config_to_hf(cfg))).eval()
    sd = {f"bert.{k}": v for k, v in state_dict_to_hf(task.backbone.state_dict(), cfg).items()}
    sd |= lm_head_to_hf(task.head.state_dict(), task.backbone.word_embed.weight.detach())
    hf.load_state_dict(sd, strict=True)
    batch = text_batch()
    with torch.no_grad():
        ref = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        got = task.eval().logits(task.backbone(batch["input_ids"], attention_mask=batch["attention_mask"]))
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
    back = lm_head_from_hf(sd)
    assert all(torch.equal(back[k], v) for k, v in task.head.state_dict().items())


def test_untied_hf_decoder_is_refused():
    hf, _ = hf_pair(tiny_cfg(), "BertForMaskedLM")
    sd = {k: v.clone() for k, v in hf.state_dict().items()}
    sd["cls.predictions.decoder.weight"] += 1.0
    with pytest.raises(ValueError, match="untied"):
        lm_head_from_hf(sd)


def test_head_is_tied_and_checkpoints_once():
    task = build_task("mlm", build_backbone(tiny_cfg()))
    names = [n for n, _ in task.named_parameters()]
    assert not any("decoder" in n for n in names)
    assert set(n for n in names if n.startswith("head.")) == {
        "head.dense.weight", "head.dense.bias", "head.norm.weight", "head.norm.bias", "head.bias"
    }
    no_decay = task.no_weight_decay()
    assert {"head.bias", "head.dense.bias", "head.norm.weight"} <= no_decay and "head.dense.weight" not in no_decay
    out = task(text_batch())
    out["loss"].backward()
    assert task.backbone.word_embed.weight.grad is not None


# --- corruption -----------------------------------------------------------------------------------


def test_80_10_10_proportions():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 1000, (64, 512), generator=g)
    chosen = torch.rand(ids.shape, generator=g) < 0.15
    corrupted, labels = corrupt_tokens(ids, chosen, MASK_ID, 1000, generator=g)
    n = chosen.sum().item()
    masked = (corrupted == MASK_ID) & chosen
    changed = (corrupted != ids) & chosen & ~masked
    assert abs(masked.sum().item() / n - 0.8) < 0.01
    assert abs(changed.sum().item() / n - 0.1) < 0.01  # random ids (1/1000 of them land on the same id)
    assert torch.equal(corrupted[~chosen], ids[~chosen])  # unchosen tokens untouched
    assert torch.equal(labels[chosen], ids[chosen]) and (labels[~chosen] == -100).all()
    random_ids = corrupted[changed]
    assert 0 <= random_ids.min() < 20 and 980 <= random_ids.max() < 1000  # the whole vocabulary
    assert random_ids.unique().numel() > 300  # ~490 uniform draws over 1000 ids: ~390 distinct


def test_ratios_are_configurable():
    ids = torch.randint(4, 50, (8, 256))
    chosen = torch.ones_like(ids, dtype=torch.bool)
    all_masked, _ = corrupt_tokens(ids, chosen, MASK_ID, 50, replace_prob=1.0, random_prob=0.0)
    assert (all_masked == MASK_ID).all()
    kept, _ = corrupt_tokens(ids, chosen, MASK_ID, 50, replace_prob=0.0, random_prob=0.0)
    assert torch.equal(kept, ids)


@pytest.mark.parametrize("with_special_mask", [True, False])
def test_special_tokens_and_padding_never_chosen(with_special_mask):
    task = MLM(build_backbone(tiny_cfg()), MLMConfig(mask_ratio=0.5, special_ids=(CLS_ID, SEP_ID)))
    batch = text_batch(b=3, length=12)
    if not with_special_mask:
        batch.pop("special_tokens_mask")
    never = (batch["attention_mask"] == 0) | (batch["input_ids"] == CLS_ID) | (batch["input_ids"] == SEP_ID)
    for _ in range(20):
        labels = task(batch, return_outputs=True)["labels"]
        assert (labels[never] == -100).all()
    # each row: round(0.5 * its 10, 7, 4 candidates) predicted
    assert ((labels != -100).sum(1) == torch.tensor([5, 4, 2])).all()


def test_mlm_mask_fixes_the_positions():
    task = MLM(build_backbone(tiny_cfg()), MLMConfig(replace_prob=1.0, random_prob=0.0))
    batch = text_batch()
    chosen = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
    chosen[0, 2] = chosen[2, 3] = True
    out = task({**batch, "mlm_mask": chosen}, return_outputs=True)
    assert torch.equal(out["labels"] != -100, chosen)
    assert torch.equal(out["input_ids"], batch["input_ids"].masked_fill(chosen, MASK_ID))
    assert out["num_predictions"].item() == 2


def test_loss_falls_when_training():
    task = build_task("mlm", build_backbone(tiny_cfg()), MLMConfig(mask_ratio=0.3))
    opt = torch.optim.AdamW(task.parameters(), lr=3e-3)
    batch = text_batch(seed=9)
    torch.manual_seed(0)
    first = task(batch)["loss"].item()
    for _ in range(30):
        opt.zero_grad()
        task(batch)["loss"].backward()
        opt.step()
    assert task(batch)["loss"].item() < first - 1.0


# --- errors ---------------------------------------------------------------------------------------


def test_missing_mask_token_id_is_a_clear_error():
    with pytest.raises(ValueError, match="mask_token_id=None"):
        build_task("mlm", build_backbone(tiny_cfg(mask_token_id=None)))


def test_causal_backbone_is_refused():
    with pytest.raises(ValueError, match="causal=True"):
        build_task("mlm", build_backbone(tiny_cfg(causal=True)))


def test_image_backbone_is_refused():
    with pytest.raises(ValueError, match="needs a text backbone .VisionTransformer reads image"):
        build_task("mlm", build_backbone("vit_test"))


@pytest.mark.parametrize("kw", [dict(mask_ratio=0.0), dict(replace_prob=0.8, random_prob=0.3), dict(random_prob=-0.1)])
def test_bad_ratios(kw):
    with pytest.raises(ValueError, match="MLMConfig"):
        MLM(build_backbone(tiny_cfg()), MLMConfig(**kw))
