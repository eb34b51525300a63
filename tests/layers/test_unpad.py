"""Skipping padded tokens (layers/unpad.py) gives the padded computation's values at real
positions, zeros at padded ones, and the same gradients."""

import pytest
import torch

from convergent.backbones import build_backbone
from convergent.layers.unpad import Unpadded


def _batch(vocab: int, b: int = 4, length: int = 12):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (b, length), generator=g)
    lengths = torch.tensor([length, 3, 7, 1])[:b]
    am = (torch.arange(length) < lengths[:, None]).long()
    return ids.masked_fill(am == 0, 0), am


@pytest.mark.parametrize("variant", ["text_test", "clip_text_test"])  # post-norm BERT, pre-norm causal CLIP
@pytest.mark.parametrize("checkpointing", [False, True])
def test_unpadded_forward_and_gradients_match_at_real_tokens(variant, checkpointing):
    torch.manual_seed(0)
    model = build_backbone(variant, dropout=0.0, attn_dropout=0.0)  # the two runs would draw different masks
    model.grad_checkpointing = checkpointing  # (in training mode, as here)
    ids, am = _batch(model.config.vocab_size)
    real = am.bool()
    results = []
    for unpad in (False, True):
        model.zero_grad()
        tokens, inter = model.forward_intermediates(ids, attention_mask=am, indices=[0, -1], unpad=unpad)
        (tokens[real].square().sum() + sum(o[real].sum() for o in inter)).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((tokens.detach(), [o.detach() for o in inter], grads))
    (ref, ref_inter, ref_grads), (got, got_inter, got_grads) = results
    torch.testing.assert_close(got[real], ref[real], atol=1e-6, rtol=0)
    assert torch.equal(got[~real], torch.zeros_like(got[~real]))
    for a, b in zip(got_inter, ref_inter):
        torch.testing.assert_close(a[real], b[real], atol=1e-6, rtol=0)
    assert ref_grads.keys() == got_grads.keys()
    for name in ref_grads:
        torch.testing.assert_close(got_grads[name], ref_grads[name], atol=1e-5, rtol=1e-5, msg=name)


def test_without_padding_unpad_changes_nothing():
    model = build_backbone("text_test").eval()
    ids, _ = _batch(model.config.vocab_size)
    am = torch.ones_like(ids)
    with torch.no_grad():
        assert torch.equal(model(ids, attention_mask=am, unpad=True), model(ids, attention_mask=am))
        assert torch.equal(model(ids, unpad=True), model(ids))


def test_pack_unpack_round_trip_and_bad_mask():
    keep = torch.tensor([[True, True, False], [True, False, False]])
    u = Unpadded(keep)
    x = torch.arange(6.0).view(2, 3, 1)
    packed = u.pack(x)
    assert u.num_tokens == 3 and packed.flatten().tolist() == [0.0, 1.0, 3.0]
    assert u.unpack(packed).flatten().tolist() == [0.0, 1.0, 0.0, 3.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="bool"):
        Unpadded(keep.long())


def test_clip_text_embeddings_skip_padding_without_changing_them():
    from convergent.tasks.clip import CLIP
    from convergent.tasks.configs import CLIPConfig

    torch.manual_seed(0)
    image, text = build_backbone("vit_clip_test"), build_backbone("clip_text_test")
    task = CLIP(image, CLIPConfig(embed_dim=16), text_backbone=text)
    ids, am = _batch(task.text_backbone.config.vocab_size)
    ids[torch.arange(4), am.sum(1) - 1] = task.text_backbone.config.vocab_size - 1  # end-of-text last
    with torch.no_grad():
        torch.testing.assert_close(task.encode_text(ids, am), task.encode_text(ids, am, unpad=False), atol=1e-6, rtol=0)
