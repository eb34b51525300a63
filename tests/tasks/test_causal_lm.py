"""Causal LM: loss and logits equal HF ``BertLMHeadModel`` (``is_decoder=True``) on converted
weights, padding included; only next tokens that are real count; clear errors.

Why not GPT-2 as the reference: GPT-2 is a different architecture, not another layout of the
same one. Its blocks are pre-norm (``x + attn(ln(x))``, a final ``ln_f``) where our text
Transformer is BERT's post-norm (``ln(x + attn(x))``, embedding LayerNorm, no final norm); it
has no token types, uses ``Conv1D`` (transposed) weights and the tanh GELU, and its LM head has
no transform or bias. No weight mapping makes the two compute the same function, so the
reference is BERT with a causal mask (``BertLMHeadModel``), which ours reproduces exactly.
"""

import pytest
import torch

from convergent.backbones import build_backbone
from convergent.tasks.causal_lm import CausalLM
from convergent.tasks.configs import CausalLMConfig
from convergent.tasks.registry import build_task
from tests.tasks.test_mlm import ATOL, assert_grads_close, hf_pair, text_batch, tiny_cfg

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_loss_and_logits_parity_with_hf(attn):
    hf, task = hf_pair(tiny_cfg(causal=True), "BertLMHeadModel", attn)
    assert hf.config.is_decoder and isinstance(task, CausalLM)
    batch = text_batch(seed=4)  # right padding: 12, 9 and 6 real tokens
    am = batch["attention_mask"]
    labels = batch["input_ids"].masked_fill(am == 0, -100)  # HF style: unshifted, -100 = ignore
    ref = hf(input_ids=batch["input_ids"], attention_mask=am, labels=labels)
    out = task(batch, return_outputs=True)
    real = am.bool()
    assert ref.logits.abs().mean() > 0.1
    torch.testing.assert_close(out["logits"][real], ref.logits[real], atol=ATOL, rtol=0)
    assert abs(out["loss"].item() - ref.loss.item()) <= ATOL
    assert out["num_predictions"].item() == 11 + 8 + 5
    # HF-style labels give the same loss; the training path (no full logits) too
    assert abs(task({**batch, "labels": labels})["loss"].item() - ref.loss.item()) <= ATOL
    assert abs(task(batch)["loss"].item() - ref.loss.item()) <= ATOL


def test_gradient_parity_with_hf():
    hf, task = hf_pair(tiny_cfg(causal=True), "BertLMHeadModel")
    batch = text_batch(seed=6)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss.backward()
    task(batch)["loss"].backward()
    pairs = {
        "backbone.word_embed.weight": "bert.embeddings.word_embeddings.weight",
        "backbone.blocks.1.norm2.weight": "bert.encoder.layer.1.output.LayerNorm.weight",
        "head.dense.weight": "cls.predictions.transform.dense.weight",
        "head.bias": "cls.predictions.bias",
    }
    assert_grads_close(task, hf, pairs)


def test_future_tokens_do_not_matter():
    task = build_task("causal-lm", build_backbone(tiny_cfg(causal=True))).eval()
    ids = torch.randint(4, 61, (2, 10))
    changed = ids.clone()
    changed[:, 6:] = torch.randint(4, 61, (2, 4))
    with torch.no_grad():
        a = task({"input_ids": ids}, return_outputs=True)["logits"]
        b = task({"input_ids": changed}, return_outputs=True)["logits"]
    torch.testing.assert_close(a[:, :6], b[:, :6], atol=1e-6, rtol=0)
    assert (a[:, 6:] - b[:, 6:]).abs().max() > 1e-3


def test_targets_skip_padding_on_both_sides():
    task = build_task("causal-lm", build_backbone(tiny_cfg(causal=True)))
    ids = torch.tensor([[0, 0, 5, 6, 7], [5, 6, 7, 8, 0]])
    am = (torch.arange(5) >= 2).long().expand(2, -1).clone()
    am[1] = torch.tensor([1, 1, 1, 1, 0])
    targets = task.targets(ids, {"attention_mask": am})
    assert targets.tolist() == [[-100, -100, 6, 7], [6, 7, 8, -100]]
    assert task({"input_ids": ids, "attention_mask": am})["num_predictions"].item() == 5


def test_label_smoothing_changes_the_loss():
    backbone = build_backbone(tiny_cfg(causal=True))
    batch = text_batch()
    plain = CausalLM(backbone, CausalLMConfig())(batch)["loss"]
    smooth = CausalLM(backbone, CausalLMConfig(label_smoothing=0.1))
    smooth.head.load_state_dict(CausalLM(backbone, CausalLMConfig()).head.state_dict())
    assert smooth(batch)["loss"].item() != pytest.approx(plain.item())


def test_non_causal_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="causal=False"):
        build_task("causal-lm", build_backbone(tiny_cfg(causal=False)))


def test_image_backbone_is_refused():
    with pytest.raises(ValueError, match="needs a text backbone .VisionTransformer reads image"):
        build_task("causal-lm", build_backbone("vit_test"))
