"""ViLT: the joint Transformer (ViT ``forward_tokens``, key padding), ITM negatives (the
dataset's false images, ViLT's default; or a derangement of the batch) and loss against a hand computation, MLM only on candidate tokens of matched
pairs, whole-word masking, a falling loss on a tiny colour ↔ word dataset, state-dict round
trip, config errors, and parity with HF ``ViltForMaskedLM`` at tiny size.

The parity holds because HF's ViLT has our layout exactly: BERT text embeddings (word +
position + token type, LayerNorm), ViT patch embeddings with class token and positions,
modality-type embeddings, pre-norm blocks, a final LayerNorm and a tanh pooler over the first
token; HF's token-type row 0 (every text token's) folds into our text positions. HF samples
the image patches in a random order (``visual_embed`` with ``max_image_length=-1`` draws a
permutation), which leaves text tokens and the pooled output unchanged but permutes the image
tokens, so those are compared per channel after sorting. HF has no 2-way ITM head
(``ViltForImageAndTextRetrieval`` scores one logit), so ITM is checked through the pooled output.
"""

import math

import pytest
import torch
import yaml

from convergent.backbones import build_backbone
from convergent.converters.hf_vit import state_dict_from_hf as vit_from_hf
from convergent.losses.language import IGNORE_INDEX, token_cross_entropy
from convergent.masking import whole_word_masking
from convergent.tasks.configs import ViLTConfig
from convergent.tasks.registry import build_task
from convergent.tasks.vilt import ViLT, itm_negatives
from tests.task_helpers import train_steps

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
VOCAB = 50


def _task(**kw) -> ViLT:
    """ViLT on ``vit_test``; in-batch negatives unless ``itm_negatives`` says otherwise (the
    tests written for them check the derangement; 'dataset' batches need a ``false_image``)."""
    kw.setdefault("itm_negatives", "batch")
    backbone_kw = kw.pop("backbone_kw", {})
    cfg = ViLTConfig(vocab_size=VOCAB, mask_token_id=MASK, max_text_len=16, special_ids=(CLS, SEP, UNK), **kw)
    return build_task("vilt", build_backbone("vit_test", **backbone_kw), cfg)


def _batch(b: int = 6, length: int = 9, seed: int = 0) -> dict:
    """Right-padded texts ``[CLS] words [SEP] [PAD]...`` of varying length, random images."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (b, length), generator=g)
    lengths = torch.randint(3, length + 1, (b,), generator=g)
    lengths[0] = length
    pos = torch.arange(length)
    attention = (pos < lengths[:, None]).long()
    ids[:, 0] = CLS
    ids[torch.arange(b), lengths - 1] = SEP
    ids = ids.masked_fill(attention == 0, PAD)
    special = (ids == CLS) | (ids == SEP) | (ids == PAD)
    image = torch.randn(b, 3, 32, 32, generator=g)
    return {"image": image, "input_ids": ids, "attention_mask": attention, "special_tokens_mask": special}


def _candidates(batch: dict) -> torch.Tensor:
    return batch["attention_mask"].bool() & ~batch["special_tokens_mask"]


# --- the joint Transformer --------------------------------------------------------------------


def test_vit_forward_tokens_keeps_outputs_bit_identical_and_masks_padding():
    vit = build_backbone("vit_test").eval()
    x = torch.randn(2, 3, 32, 32)
    tokens = vit.embed(x)
    ref = tokens
    for block in vit.blocks:  # the loop forward_intermediates ran before forward_tokens existed
        ref = block(ref)
    assert torch.equal(vit.forward_features(x), vit.norm(ref))
    assert torch.equal(vit.forward_tokens(tokens)[0], vit.norm(ref))
    # appended padding that nothing attends to leaves the real tokens as they were
    padded = torch.cat([tokens, torch.randn(2, 3, tokens.shape[-1])], dim=1)
    real = torch.ones(padded.shape[:2], dtype=torch.bool)
    real[:, -3:] = False
    out, blocks = vit.forward_tokens(padded, key_padding_mask=real, indices=[-1])
    torch.testing.assert_close(out[:, :-3], vit.norm(ref), atol=1e-5, rtol=0)
    assert len(blocks) == 1 and blocks[0].shape == padded.shape
    with pytest.raises(ValueError, match="key_padding_mask of shape"):
        vit.forward_tokens(padded, key_padding_mask=real[:, :-1])
    with pytest.raises(ValueError, match="expected tokens of shape"):
        vit.forward_tokens(padded[..., :8])


@pytest.mark.parametrize("single_pass", [False, True])
def test_outputs_shapes_and_gradients(single_pass):
    task = _task(single_pass=single_pass).train()
    batch = _batch()
    out = task(batch, return_outputs=True)
    for key in ("loss", "itm_loss", "mlm_loss", "itm_acc", "mlm_acc"):
        assert out[key].shape == () and torch.isfinite(out[key]), key
    assert out["itm_logits"].shape == (6, 2) and out["mlm_labels"].shape == batch["input_ids"].shape
    assert task.batch_keys == ("image", "input_ids", "attention_mask")
    tokens, pooled = task.encode(batch["input_ids"], batch["image"], batch["attention_mask"])
    assert tokens.shape == (6, 9 + 1 + 16, 32) and pooled.shape == (6, 32)
    out["loss"].backward()
    missing = [n for n, p in task.named_parameters() if p.grad is None]
    assert missing == ["backbone.mask_token"]  # ViLT never masks patches
    assert all(torch.isfinite(p.grad).all() for p in task.parameters() if p.grad is not None)


def test_padding_does_not_change_the_real_tokens():
    task = _task().eval()
    batch = _batch()
    ids, attention, image = batch["input_ids"], batch["attention_mask"], batch["image"]
    extra = torch.randint(5, VOCAB, (6, 4))  # junk under attention_mask 0
    more_ids = torch.cat([ids, extra], dim=1)
    more_attention = torch.cat([attention, torch.zeros_like(extra)], dim=1)
    with torch.no_grad():
        tokens, pooled = task.encode(ids, image, attention)
        tokens2, pooled2 = task.encode(more_ids, image, more_attention)
    real = attention.bool()
    torch.testing.assert_close(tokens2[:, :9][real], tokens[:, :9][real], atol=1e-5, rtol=0)
    torch.testing.assert_close(tokens2[:, 13:], tokens[:, 9:], atol=1e-5, rtol=0)  # class token and patches
    torch.testing.assert_close(pooled2, pooled, atol=1e-5, rtol=0)


# --- ITM ---------------------------------------------------------------------------------------


def test_itm_negatives_are_a_derangement():
    for b in range(2, 10):
        for seed in range(5):
            negative, partner = itm_negatives(b, 0.5, generator=torch.Generator().manual_seed(seed))
            assert sorted(partner.tolist()) == list(range(b))
            assert not (partner == torch.arange(b)).any()
            assert int(negative.sum()) == round(0.5 * b)
    negative, partner = itm_negatives(1)
    assert not negative.any() and partner.tolist() == [0]
    # every other row is reachable: the partner of row 0 over many draws
    seen = {int(itm_negatives(5, generator=torch.Generator().manual_seed(s))[1][0]) for s in range(40)}
    assert seen == {1, 2, 3, 4}


@pytest.mark.parametrize("single_pass", [False, True])
def test_itm_and_mlm_losses_equal_a_hand_computation(single_pass):
    task = _task(single_pass=single_pass, itm_weight=0.3, mlm_weight=2.0).eval()
    batch = _batch(b=8)
    with torch.no_grad():
        out = task(batch, return_outputs=True)
    labels, seen = out["itm_labels"], out["itm_image"]
    assert torch.equal(labels, (seen == torch.arange(8)).long())  # 1 exactly where the image is its own
    assert int((labels == 0).sum()) == 4
    image, ids, attention = batch["image"], batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        itm_ids = out["mlm_input_ids"] if single_pass else ids
        _, pooled = task.encode(itm_ids, image[seen], attention)
        logits = task.itm_head(pooled)
        text = task.encode(out["mlm_input_ids"], image[out["mlm_image"]], attention)[0][:, :9]
    torch.testing.assert_close(out["itm_logits"], logits, atol=1e-5, rtol=0)
    ce = 0.0
    for row, label in zip(logits.tolist(), labels.tolist()):
        ce += math.log(sum(math.exp(v) for v in row)) - row[label]
    torch.testing.assert_close(out["itm_loss"], torch.tensor(ce / 8), atol=1e-5, rtol=0)
    acc = sum(int(max(range(2), key=lambda j: row[j]) == lab) for row, lab in zip(logits.tolist(), labels.tolist()))
    assert out["itm_acc"].item() == pytest.approx(acc / 8)
    predicted = out["mlm_labels"] != IGNORE_INDEX
    mlm, mlm_acc, _ = token_cross_entropy(task.mlm_logits(text[predicted]), out["mlm_labels"][predicted])
    torch.testing.assert_close(out["mlm_loss"], mlm, atol=1e-5, rtol=0)
    torch.testing.assert_close(out["mlm_acc"], mlm_acc)
    torch.testing.assert_close(out["loss"], 0.3 * out["itm_loss"] + 2.0 * out["mlm_loss"])


@pytest.mark.parametrize("single_pass", [False, True])
def test_dataset_negatives_take_the_false_image(single_pass):
    task = _task(itm_negatives="dataset", single_pass=single_pass).eval()
    assert "false_image" in task.batch_keys and "false_image" not in _task().batch_keys
    batch = _batch(b=8)
    batch["false_image"] = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        out = task(batch, return_outputs=True)
    negative = out["itm_labels"] == 0
    assert int(negative.sum()) == 4 and torch.equal(out["itm_image"] == -1, negative)
    images = torch.where(negative[:, None, None, None], batch["false_image"], batch["image"])
    ids = out["mlm_input_ids"] if single_pass else batch["input_ids"]
    with torch.no_grad():
        logits = task.itm_head(task.encode(ids, images, batch["attention_mask"])[1])
    torch.testing.assert_close(out["itm_logits"], logits, atol=1e-5, rtol=0)
    with pytest.raises(KeyError, match="false_image"):
        task(_batch(b=8))


# --- MLM ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("single_pass", [False, True])
def test_mlm_only_on_candidates_of_matched_pairs(single_pass):
    task = _task(single_pass=single_pass, mask_ratio=1.0, replace_prob=1.0, random_prob=0.0)
    batch = _batch(b=8)
    out = task(batch, return_outputs=True)
    predicted = out["mlm_labels"] != IGNORE_INDEX
    expected = _candidates(batch)
    if single_pass:  # one pass with the swapped images: the mismatched rows predict nothing
        expected &= out["itm_labels"].bool()[:, None]
    else:  # the MLM pass pairs every text with its own image
        assert torch.equal(out["mlm_image"], torch.arange(8))
    assert torch.equal(predicted, expected)
    assert (out["mlm_input_ids"][_candidates(batch)] == MASK).all()
    assert torch.equal(out["mlm_labels"][predicted], batch["input_ids"][predicted])
    # the default 15 %: never a special or padding token, without special_tokens_mask too
    task = _task(single_pass=single_pass)
    for seed in range(5):
        torch.manual_seed(seed)
        b = _batch(b=8, seed=seed)
        special = b.pop("special_tokens_mask")
        picked = task(b, return_outputs=True)["mlm_labels"] != IGNORE_INDEX
        assert not (picked & (special | ~b["attention_mask"].bool())).any()
        assert (picked.sum(1) >= 1).any()


def test_whole_word_masking_hides_words_whole_within_the_budget():
    words = [-1, 0, 0, 0, 1, 2, 2, 3, 4, 4, 5, -1, -1]  # 6 words, 10 pieces, then [SEP] [PAD]
    word_ids = torch.tensor([words] * 200)
    candidates = word_ids >= 0
    mask = whole_word_masking(word_ids, candidates, 0.3, generator=torch.Generator().manual_seed(0))
    assert not (mask & ~candidates).any()
    for row in mask:
        for w in range(6):
            pieces = row[word_ids[0] == w]
            assert pieces.all() or not pieces.any(), "a word is hidden in part"
        assert 1 <= int(row.sum()) <= 3  # the budget: round(0.3 * 10)
    assert len({tuple(r.tolist()) for r in mask}) > 5  # random words, not always the same
    # a word longer than the budget is still hidden whole when it comes first
    single = torch.tensor([[-1, 0, 0, 0, 0, -1]])
    long_word = whole_word_masking(single, single >= 0, 0.15)
    assert long_word.tolist() == [[False, True, True, True, True, False]]
    # single-piece words: exactly BERT's token count round(ratio * n)
    ones = torch.arange(20).expand(4, -1)
    assert (whole_word_masking(ones, torch.ones(4, 20, dtype=torch.bool), 0.15).sum(1) == 3).all()


def test_whole_word_mask_in_the_task():
    batch = _batch(b=4)
    words = torch.tensor([[-1, 0, 0, 0, 1, 1, 2, 3, -1]] * 4)  # [CLS] a ##b ##c d ##e f g [SEP]
    batch["word_ids"] = words
    batch["special_tokens_mask"] = words < 0
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    task = _task(whole_word_mask=True, mask_ratio=0.4)
    for seed in range(5):
        torch.manual_seed(seed)
        predicted = task(batch, return_outputs=True)["mlm_labels"] != IGNORE_INDEX
        for w in range(4):
            cols = predicted[:, words[0] == w]
            assert (cols.all(1) | ~cols.any(1)).all()
    batch.pop("word_ids")
    with pytest.warns(UserWarning, match="no word_ids"):
        task(batch)


# --- training, saving, errors -------------------------------------------------------------


def _colour_batch(b: int = 16, seed: int = 0) -> dict:
    """Solid-colour images with a little noise; texts ``[CLS] the <colour> one [SEP]``."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1]])
    which = torch.arange(b) % 4
    image = colours[which][:, :, None, None] + 0.1 * torch.randn(b, 3, 32, 32, generator=g)
    ids = torch.stack([torch.tensor([CLS, 9, 5 + int(c), 10, SEP]) for c in which])
    return {
        "image": image, "input_ids": ids, "attention_mask": torch.ones_like(ids),
        "special_tokens_mask": (ids == CLS) | (ids == SEP),
    }  # fmt: skip


def test_loss_falls_on_colour_words():
    task = _task().train()
    losses, _ = train_steps(task, _colour_batch(), 12, lr=3e-3)
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses


def test_state_dict_round_trip():
    task = _task().eval()
    with torch.no_grad():
        for p in task.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    again = _task().eval()
    again.load_state_dict(task.state_dict(), strict=True)
    batch = _batch()
    torch.manual_seed(3)
    a = task(batch)
    torch.manual_seed(3)
    b = again(batch)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_clear_errors():
    text = build_backbone("text_test")
    with pytest.raises(ValueError, match="needs an image backbone .TextTransformer reads text.$"):
        build_task("vilt", text, ViLTConfig(vocab_size=VOCAB, mask_token_id=MASK))
    vit = build_backbone("vit_test")
    with pytest.raises(ValueError, match="vocab_size must be set"):
        build_task("vilt", vit, ViLTConfig(mask_token_id=MASK))
    with pytest.raises(ValueError, match="mask_token_id must be set"):
        build_task("vilt", vit, ViLTConfig(vocab_size=VOCAB))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        build_task("vilt", vit, ViLTConfig(vocab_size=VOCAB, mask_token_id=VOCAB))
    task = _task()
    batch = _batch(length=17)
    with pytest.raises(ValueError, match="exceeds ViLTConfig.max_text_len 16"):
        task(batch)
    batch = _batch()
    batch["image"] = batch["image"][:5]
    with pytest.raises(ValueError, match="5 images but 6 texts"):
        task(batch)
    batch = _batch()
    batch["input_ids"][0, 1] = VOCAB
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 50\)"):
        task(batch)


def test_optimizer_metadata():
    task = _task()
    no_decay = task.no_weight_decay()
    assert {"text_embed.pos_embed.weight", "modality_embed.weight", "text_embed.norm.weight"} <= no_decay
    assert "mlm_head.bias" in no_decay
    assert {"backbone.pos_embed", "backbone.cls_token"} <= no_decay
    assert "text_embed.word_embed.weight" not in no_decay and "itm_head.weight" not in no_decay
    top = task.backbone.num_layers - 1
    assert task.layer_id("text_embed.word_embed.weight") == 0 and task.layer_id("modality_embed.weight") == 0
    assert task.layer_id("itm_head.weight") == top and task.layer_id("pooler.dense.weight") == top
    assert task.layer_id("backbone.blocks.1.attn.qkv.weight") == 2


def test_preset_parses():
    from importlib import resources

    from convergent.config import PretrainConfig, from_dict

    text = resources.files("convergent").joinpath("configs/vilt-emoji.yaml").read_text()
    cfg = from_dict(PretrainConfig, yaml.safe_load(text), "vilt-emoji")
    assert cfg.task.name == "vilt" and cfg.data.tokenizer_kind == "wordpiece" and cfg.trainer.max_steps == 400
    assert isinstance(cfg.task.vilt, ViLTConfig)


# --- parity with HF transformers ------------------------------------------------------------


def _from_hf_vilt(sd: dict, vit_cfg) -> dict:
    """HF ``ViltForMaskedLM`` state dict → our ViLT task's (without the ITM head)."""
    sd = {k.removeprefix("vilt."): v for k, v in sd.items()}
    ignore = ("embeddings.text_embeddings.", "embeddings.token_type_embeddings.", "mlm_score.")
    out = {f"backbone.{k}": v for k, v in vit_from_hf(sd, vit_cfg, ignore=ignore).items()}
    text = "embeddings.text_embeddings."
    out["text_embed.word_embed.weight"] = sd[text + "word_embeddings.weight"]
    # every text token has token type 0: that row folds into the positions
    type0 = sd[text + "token_type_embeddings.weight"][0]
    out["text_embed.pos_embed.weight"] = sd[text + "position_embeddings.weight"] + type0
    out["text_embed.norm.weight"] = sd[text + "LayerNorm.weight"]
    out["text_embed.norm.bias"] = sd[text + "LayerNorm.bias"]
    out["modality_embed.weight"] = sd["embeddings.token_type_embeddings.weight"]
    for ours, hf in (("pooler.dense", "pooler.dense"), ("mlm_head.dense", "mlm_score.transform.dense"),
                     ("mlm_head.norm", "mlm_score.transform.LayerNorm")):  # fmt: skip
        out[f"{ours}.weight"], out[f"{ours}.bias"] = sd[f"{hf}.weight"], sd[f"{hf}.bias"]
    out["mlm_head.bias"] = sd["mlm_score.decoder.bias"]
    return out


def test_parity_with_hf_vilt():
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.ViltConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        max_position_embeddings=16, image_size=32, patch_size=8, layer_norm_eps=1e-12, hidden_act="gelu",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    hf = transformers.ViltForMaskedLM(hf_cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # biases and norms away from 0 / 1
    task = _task(backbone_kw=dict(norm_eps=1e-12)).eval()
    sd = _from_hf_vilt(hf.state_dict(), task.backbone.config)
    sd["itm_head.weight"], sd["itm_head.bias"] = task.itm_head.weight, task.itm_head.bias
    task.load_state_dict(sd, strict=True)
    batch = _batch()
    ids, attention, image = batch["input_ids"], batch["attention_mask"], batch["image"]
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=attention, pixel_values=image, output_hidden_states=True)
        hidden = hf.vilt(input_ids=ids, attention_mask=attention, pixel_values=image)
        tokens, pooled = task.encode(ids, image, attention)
    real = attention.bool()
    torch.testing.assert_close(tokens[:, :9][real], hidden.last_hidden_state[:, :9][real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled, hidden.pooler_output, atol=1e-5, rtol=1e-5)
    # image tokens: HF permutes the patches, so compare each channel's sorted values
    torch.testing.assert_close(
        tokens[:, 9:].sort(dim=1).values, hidden.last_hidden_state[:, 9:].sort(dim=1).values, atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(task.mlm_logits(tokens[:, :9])[real], ref.logits[real], atol=1e-4, rtol=1e-5)
