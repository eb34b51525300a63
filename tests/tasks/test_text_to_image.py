"""Text-to-image: the sequence is causal across [caption ; codes], the loss is DALL-E's weighted
sum of the two next-token losses, training memorises caption -> image codes so that greedy
sampling gives them back, the empty caption of an unconditional run, and refusals."""

import pytest
import torch

from convergent.backbones import build_backbone
from convergent.tasks.configs import TextToImageConfig
from convergent.tasks.text_to_image import TextToImage
from tests.preset_helpers import stand_in_tokenizer

VOCAB, PAD = 50, 0


def task(**changes) -> TextToImage:
    torch.manual_seed(0)
    text = build_backbone("text_test", vocab_size=VOCAB, pad_token_id=PAD, causal=True, max_position=16,
                          dropout=0.0, attn_dropout=0.0)  # fmt: skip
    config = TextToImageConfig(**{"text_length": 6, **changes})
    return TextToImage(text, config, stand_in_tokenizer(8, 16))  # 2 x 2 codes of 16


def batch(b: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (b, 4), generator=g)
    mask = torch.ones(b, 4, dtype=torch.long)
    mask[0, 3] = 0  # a shorter caption
    return {"input_ids": ids, "attention_mask": mask, "image": torch.randn(b, 3, 16, 16, generator=g),
            "image_ids": torch.randint(0, 16, (b, 2, 2), generator=g)}  # fmt: skip


def test_the_sequence_is_causal_across_caption_and_codes():
    model = task().eval()
    b = batch()
    ids, _ = model.padded_captions(b["input_ids"], b["attention_mask"])
    assert ids.shape == (3, 6) and (ids[0, 3:] == PAD).all() and (ids[1, 4:] == PAD).all()
    codes = b["image_ids"].flatten(1)
    with torch.no_grad():
        h = model.hidden(ids, codes)
        changed = codes.clone()
        changed[:, 2] = (changed[:, 2] + 1) % 16
        h2 = model.hidden(ids, changed)
        other = ids.clone()
        other[:, 0] = (other[:, 0] + 1) % VOCAB
        h3 = model.hidden(other, codes)
    assert torch.equal(h[:, : 6 + 2], h2[:, : 6 + 2])  # code 2 is seen by no earlier position
    assert not torch.allclose(h[:, 6 + 2], h2[:, 6 + 2])
    assert not torch.allclose(h[:, 5], h3[:, 5])  # the caption reaches the position predicting code 0


def test_loss_is_the_weighted_sum_of_the_two_next_token_losses():
    model = task(text_loss_weight=0.25).eval()
    b = batch()
    with torch.no_grad():
        out = model(b)
        ids, real = model.padded_captions(b["input_ids"], b["attention_mask"])
        codes = b["image_ids"].flatten(1)
        h = model.hidden(ids, codes)
        text_terms = []
        for i in range(3):  # by hand: position t predicts caption token t+1 where both are real
            for t in range(5):
                if real[i, t] and real[i, t + 1]:
                    text_terms.append(torch.nn.functional.cross_entropy(model.logits(h[i, t]).float()[None], ids[i, t + 1][None]))
        image_terms = [torch.nn.functional.cross_entropy(model.image_head(h[i, 5 + j])[None].float(), codes[i, j][None])
                       for i in range(3) for j in range(4)]  # fmt: skip
    text, image = torch.stack(text_terms).mean(), torch.stack(image_terms).mean()
    torch.testing.assert_close(out["text_loss"], text)
    torch.testing.assert_close(out["image_loss"], image)
    torch.testing.assert_close(out["loss"], 0.25 * text + 0.75 * image)


def test_greedy_sampling_returns_the_memorised_images():
    model = task(text_loss_weight=0.0)
    b = batch(2, seed=3)
    b["attention_mask"][:] = 1
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(150):
        out = model.train()(b)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert out["image_accuracy"].item() == 1.0
    model.eval()
    got = model.sample(b["input_ids"], b["attention_mask"], top_k=1)
    assert torch.equal(got, b["image_ids"])
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a = model.sample(b["input_ids"], temperature=5.0, generator=g1)
    assert torch.equal(a, model.sample(b["input_ids"], temperature=5.0, generator=g2)) and a.shape == (2, 2, 2)
    images = model.tokenizer.decode(got)
    assert images.shape == (2, 3, 16, 16)


def test_an_unconditional_run_sees_empty_captions():
    model = task(caption_dropout=1.0).train()
    out = model(batch())
    assert out["text_loss"].item() == 0.0 and out["image_loss"].item() > 0


def test_refusals():
    text = build_backbone("text_test", vocab_size=VOCAB, causal=False, max_position=16)
    with pytest.raises(ValueError, match="causal=True"):
        TextToImage(text, TextToImageConfig(text_length=6), stand_in_tokenizer(8, 16))
    model = task()
    with pytest.raises(ValueError, match="captions of 8 tokens exceed text_length 6"):
        model({"input_ids": torch.ones(1, 8, dtype=torch.long), "image_ids": torch.zeros(1, 2, 2, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"the image codes form a \(3, 3\) grid, the task's is \(2, 2\)"):
        model({"input_ids": torch.ones(1, 4, dtype=torch.long), "image_ids": torch.zeros(1, 3, 3, dtype=torch.long)})
    with pytest.raises(ValueError, match="temperature must be > 0"):
        model.sample(torch.ones(1, 4, dtype=torch.long), temperature=0.0)


def test_cached_sampling_draws_the_codes_of_uncached_sampling():
    model = task().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # away from the init, so the codes vary
    b = batch()
    for top_k, temperature in ((1, 1.0), (None, 1.5)):
        cached = model.sample(b["input_ids"], b["attention_mask"], temperature, top_k, torch.Generator().manual_seed(2))
        plain = model.sample(b["input_ids"], b["attention_mask"], temperature, top_k, torch.Generator().manual_seed(2),
                             use_cache=False)  # fmt: skip
        assert torch.equal(cached, plain)
    assert len(set(cached.flatten().tolist())) > 1
