"""The captioner: its loss equals HF ``BertLMHeadModel``'s with cross-attention given the same
decoder weights and image states; greedy decoding is the argmax loop; training memorises
image -> caption so that greedy and beam search give the captions back; refusals."""

import pytest
import torch

from convergent.backbones import build_backbone
from convergent.converters.hf_bert import config_to_hf, lm_head_to_hf, state_dict_to_hf
from convergent.tasks.caption import Caption
from convergent.tasks.configs import CaptionConfig

transformers = pytest.importorskip("transformers")

VOCAB, BOS, EOS, PAD = 40, 1, 2, 0
DECODER = {"vocab_size": VOCAB, "pad_token_id": PAD, "max_position": 16, "dropout": 0.0, "attn_dropout": 0.0}


def task(**changes) -> Caption:
    torch.manual_seed(0)
    encoder = build_backbone("vit_test", img_size=16, patch_size=8)
    return Caption(encoder, CaptionConfig(text_backbone="text_test", text_overrides=DECODER, **changes))


def captions() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[BOS, 5, 6, 7, EOS], [BOS, 9, 8, EOS, PAD]])
    return ids, (ids != PAD).long()


def test_loss_matches_hf_bert_lm_head_model_with_cross_attention():
    model = task().eval()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    cfg = model.decoder.config
    hf = transformers.BertLMHeadModel(transformers.BertConfig(**config_to_hf(cfg), attn_implementation="eager")).eval()
    sd = {f"bert.{k}": v for k, v in state_dict_to_hf(model.decoder.state_dict(), cfg).items()}
    sd.update(lm_head_to_hf(model.head.state_dict(), model.decoder.word_embeddings.weight))
    hf.load_state_dict(sd, strict=True)
    images = torch.randn(2, 3, 16, 16)
    ids, mask = captions()
    with torch.no_grad():
        ours = model({"image": images, "input_ids": ids, "attention_mask": mask})
        states = model.states(images)
        ref = hf(ids, attention_mask=mask, encoder_hidden_states=states, labels=ids.masked_fill(mask == 0, -100),
                 use_cache=False)  # fmt: skip
    torch.testing.assert_close(ours["loss"], ref.loss, rtol=1e-5, atol=1e-5)
    assert ours["num_predictions"].item() == 7  # 4 + 3 next tokens


def test_greedy_is_the_argmax_loop():
    model = task().eval()
    images = torch.randn(2, 3, 16, 16)
    got = model.generate(images, BOS, EOS, beam_size=1, max_new_tokens=5, use_cache=False)
    assert model.generate(images, BOS, EOS, beam_size=1, max_new_tokens=5) == got  # the KV-cached decoder
    for img, caption in zip(images, got):
        seq = [BOS]
        for _ in range(5):
            logits = model.logits(torch.tensor([seq]), model.states(img[None]))[0, -1]
            seq.append(int(logits.argmax()))
            if seq[-1] == EOS:
                break
        assert caption == seq


def test_training_memorises_captions_that_decoding_gives_back():
    model = task(beam_size=3)
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    ids, mask = captions()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(120):
        out = model.train()({"image": images, "input_ids": ids, "attention_mask": mask})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert out["accuracy"].item() == 1.0
    model.eval()
    expected = [[BOS, 5, 6, 7, EOS], [BOS, 9, 8, EOS]]
    assert model.generate(images, BOS, EOS, beam_size=1) == expected
    assert model.generate(images, BOS, EOS) == expected  # beam search (3)


def test_refusals():
    with pytest.raises(ValueError, match="beam_size and max_new_tokens must be >= 1"):
        task(beam_size=0)
    with pytest.raises(ValueError, match="task 'caption' needs an image backbone"):
        Caption(build_backbone("text_test"), CaptionConfig(text_backbone="text_test"))
    with pytest.raises(ValueError, match="cross_attention is an option of the BERT layout"):
        Caption(build_backbone("vit_test"), CaptionConfig(text_backbone="clip_text_test"))


def test_cached_beam_search_equals_uncached():
    model = task().eval()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # varied captions, not one token repeated
    images = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    for beams in (1, 3):
        plain = model.generate(images, BOS, EOS, beam_size=beams, max_new_tokens=8, use_cache=False)
        assert model.generate(images, BOS, EOS, beam_size=beams, max_new_tokens=8) == plain
    assert len({t for c in plain for t in c}) > 3
