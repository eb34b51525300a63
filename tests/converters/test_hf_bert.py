"""Parity of ``converters.hf_bert`` + ``TextTransformer`` with HF ``transformers`` BERT.

Tiny models with noticeably random weights (std 0.2 everywhere, LayerNorms and biases
included) so that a wrong mapping cannot pass; fp32, eval mode, dropout 0.
"""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from convergent.backbones import TextConfig, build_backbone  # noqa: E402
from convergent.converters.hf_bert import (  # noqa: E402
    config_from_hf,
    config_to_hf,
    state_dict_from_hf,
    state_dict_to_hf,
)

ATOL = 1e-5
GRAD_RTOL = 1e-4
VOCAB = 97


def tiny_cfg(**kw) -> TextConfig:
    base = dict(
        vocab_size=VOCAB, max_position=16, type_vocab_size=2, embed_dim=32, depth=2, num_heads=4,
        mlp_dim=48, dropout=0.0, attn_dropout=0.0, pooler=True,
    )  # fmt: skip
    return TextConfig(**{**base, **kw})


def randomise_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def hf_bert(cfg: TextConfig, seed: int = 0, attn: str = "eager", cls=None):
    """A randomised HF model equivalent to ``cfg`` (``BertModel`` unless ``cls`` given)."""
    hc = transformers.BertConfig(**config_to_hf(cfg), attn_implementation=attn)
    model = transformers.BertModel(hc, add_pooling_layer=cfg.pooler) if cls is None else cls(hc)
    return randomise_(model, seed)


def ours_from_hf(hf_sd: dict, cfg: TextConfig):
    model = build_backbone(cfg).eval()
    model.load_weights(state_dict_from_hf(hf_sd, cfg), source="converted HF state dict")
    return model


def inputs(seed: int = 1, left_pad: bool = False):
    """ids (3, 12) with padding (pad id 0 at padded positions), attention mask, token types."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (3, 12), generator=g)
    am = torch.ones(3, 12, dtype=torch.long)
    am[1, 8:] = 0
    am[2, 5:] = 0
    if left_pad:
        am[0, :3] = 0
    ids = ids.masked_fill(am == 0, 0)
    types = torch.randint(0, 2, (3, 12), generator=g)
    return ids, am, types


def hf_out(hf, ids, am, types):
    return hf(ids, attention_mask=am, token_type_ids=types, use_cache=False, output_hidden_states=True)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_hf_to_ours_parity(attn):
    cfg = tiny_cfg()
    hf = hf_bert(cfg, attn=attn)
    ours = ours_from_hf(hf.state_dict(), cfg)
    ids, am, types = inputs()
    with torch.no_grad():
        ref = hf_out(hf, ids, am, types)
        tokens, inter = ours.forward_intermediates(ids, attention_mask=am, token_type_ids=types)
    assert ref.last_hidden_state.abs().mean() > 0.1  # a non-degenerate reference
    torch.testing.assert_close(tokens, ref.last_hidden_state, atol=ATOL, rtol=0)
    torch.testing.assert_close(ours.pooled(tokens), ref.pooler_output, atol=ATOL, rtol=0)
    # HF hidden_states = (embeddings, block 1, ..., block depth)
    assert len(inter) == cfg.depth
    for got, want in zip(inter, ref.hidden_states[1:]):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_ours_to_hf_parity():
    cfg = tiny_cfg()
    ours = randomise_(build_backbone(cfg), seed=3)
    hf = transformers.BertModel(transformers.BertConfig(**config_to_hf(cfg)), add_pooling_layer=True).eval()
    hf.load_state_dict(state_dict_to_hf(ours.state_dict(), cfg), strict=True)
    ids, am, types = inputs()
    with torch.no_grad():
        ref = hf_out(hf, ids, am, types)
        tokens = ours(ids, attention_mask=am, token_type_ids=types)
    torch.testing.assert_close(tokens, ref.last_hidden_state, atol=ATOL, rtol=0)
    torch.testing.assert_close(ours.pooled(tokens), ref.pooler_output, atol=ATOL, rtol=0)


def test_round_trip_state_dict_is_exact():
    cfg = tiny_cfg(mask_token_id=None)
    ours = randomise_(build_backbone(cfg), seed=4)
    sd = ours.state_dict()
    back = state_dict_from_hf(state_dict_to_hf(sd, cfg), cfg)
    assert set(back) == set(sd)
    for k, v in sd.items():
        if k == "mask_token":  # no HF counterpart: comes back as zeros
            assert back[k].abs().sum() == 0
        else:
            assert torch.equal(back[k], v), k


@pytest.mark.parametrize("causal", [False, True])
def test_gradient_parity(causal):
    cfg = tiny_cfg(causal=causal)
    hf = hf_bert(cfg, seed=5)
    ours = ours_from_hf(hf.state_dict(), cfg)
    ids, am, types = inputs()
    g = torch.Generator().manual_seed(6)
    w_tok, w_pool = torch.randn(3, 12, 32, generator=g), torch.randn(3, 32, generator=g)

    ref = hf(ids, attention_mask=am, token_type_ids=types, use_cache=False)
    (ref.last_hidden_state * w_tok).sum().add((ref.pooler_output * w_pool).sum()).backward()
    tokens = ours(ids, attention_mask=am, token_type_ids=types)
    (tokens * w_tok).sum().add((ours.pooled(tokens) * w_pool).sum()).backward()

    hf_grads = state_dict_from_hf({n: p.grad for n, p in hf.named_parameters()}, cfg)
    checked = 0
    for name, p in ours.named_parameters():
        if name == "mask_token":  # unused without a mask
            assert p.grad is None
            continue
        want = hf_grads[name]
        assert p.grad is not None, name
        err = (p.grad - want).abs().max() / want.abs().max().clamp_min(1e-12)
        assert err <= GRAD_RTOL, f"{name}: relative gradient error {err:.2e}"
        checked += 1
    assert checked == len(hf_grads) - 1  # every converted parameter but the zero mask token


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_causal_parity_with_is_decoder(attn):
    """HF ``BertModel(is_decoder=True)`` combines a causal mask with the padding mask
    (``create_causal_mask``). Real tokens match whatever the padding side. A left-padded
    query has no visible key at all; its output is meaningless and differs between HF's
    eager and sdpa paths, so only real positions are compared."""
    cfg = tiny_cfg(causal=True)
    hf = hf_bert(cfg, seed=7, attn=attn)
    assert hf.config.is_decoder
    ours = ours_from_hf(hf.state_dict(), cfg)
    ids, am, types = inputs(left_pad=True)
    with torch.no_grad():
        ref = hf_out(hf, ids, am, types).last_hidden_state
        tokens = ours(ids, attention_mask=am, token_type_ids=types)
        bidirectional = ours_from_hf(hf.state_dict(), tiny_cfg())(ids, attention_mask=am, token_type_ids=types)
    real = am.bool()
    torch.testing.assert_close(tokens[real], ref[real], atol=ATOL, rtol=0)
    assert (bidirectional[real] - ref[real]).abs().max() > 1e-2  # the causal mask matters here


def test_mask_token_id_equals_replacing_ids():
    cfg = tiny_cfg(mask_token_id=5)
    hf = hf_bert(cfg, seed=8)
    ours = ours_from_hf(hf.state_dict(), cfg)
    assert ours.mask_token is None
    ids, am, types = inputs()
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[0, [1, 4]] = mask[1, 2] = mask[2, 0] = True
    replaced = ids.masked_fill(mask, 5)
    with torch.no_grad():
        got = ours(ids, mask=mask, attention_mask=am, token_type_ids=types)
        ref = hf_out(hf, replaced, am, types).last_hidden_state
        unmasked = ours(ids, attention_mask=am, token_type_ids=types)
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
    assert (got - unmasked).abs().max() > 1e-2


def test_config_round_trips():
    hf_dict = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=40,
        hidden_act="gelu_pytorch_tanh", max_position_embeddings=20, type_vocab_size=3, layer_norm_eps=1e-7,
        hidden_dropout_prob=0.05, attention_probs_dropout_prob=0.15, pad_token_id=2, is_decoder=True,
    ).to_dict()  # fmt: skip
    cfg = config_from_hf(hf_dict, mask_token_id=4, pooler=False)
    assert (cfg.embed_dim, cfg.depth, cfg.mlp_dim, cfg.act, cfg.causal) == (32, 3, 40, "gelu_tanh", True)
    assert (cfg.mask_token_id, cfg.pooler, cfg.pad_token_id, cfg.norm_eps) == (4, False, 2, 1e-7)
    back = config_to_hf(cfg)
    assert back["model_type"] == "bert" and back["architectures"] == ["BertModel"]
    for key, value in back.items():
        if key != "architectures":
            assert hf_dict[key] == value, key
    assert config_from_hf(back, mask_token_id=4, pooler=False) == cfg
    # BertConfig accepts the exported dict as keyword arguments
    assert transformers.BertConfig(**back).to_dict()["num_hidden_layers"] == 3


@pytest.mark.parametrize(
    "change, message",
    [
        ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
        ({"hidden_act": "silu"}, "hidden_act 'silu'"),
        ({"is_encoder_decoder": True}, "encoder-decoder use"),
        ({"model_type": "roberta"}, "model_type 'roberta'"),
    ],
)
def test_unsupported_config_is_a_clear_error(change, message):
    hf_dict = {**config_to_hf(tiny_cfg()), **change}
    with pytest.raises(ValueError, match=message):
        config_from_hf(hf_dict)


def test_unknown_keys_are_listed():
    cfg = tiny_cfg()
    sd = dict(hf_bert(cfg).state_dict())
    sd["encoder.layer.0.attention.self.rotary.weight"] = torch.zeros(1)
    sd["adapter.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match=r"2 keys were not understood.*adapter\.weight.*rotary\.weight"):
        state_dict_from_hf(sd, cfg)


def test_missing_layer_is_a_clear_error():
    sd = hf_bert(tiny_cfg()).state_dict()
    with pytest.raises(KeyError, match=r"encoder\.layer\.2\.attention\.self\.query\.weight"):
        state_dict_from_hf(sd, tiny_cfg(depth=3))


def test_pooler_mismatch_is_a_clear_error():
    with_pooler = hf_bert(tiny_cfg(pooler=True)).state_dict()
    without = hf_bert(tiny_cfg(pooler=False)).state_dict()
    with pytest.raises(ValueError, match="no pooler.*cfg.pooler is True"):
        state_dict_from_hf(without, tiny_cfg(pooler=True))
    with pytest.raises(ValueError, match="has a pooler.*cfg.pooler is False"):
        state_dict_from_hf(with_pooler, tiny_cfg(pooler=False))
    dropped = state_dict_from_hf(with_pooler, tiny_cfg(pooler=False), ignore=("cls.", "pooler."))
    assert not any(k.startswith("pooler") for k in dropped)


def test_masked_lm_checkpoint_converts():
    cfg = tiny_cfg(pooler=False, mask_token_id=3)
    mlm = hf_bert(cfg, seed=9, cls=transformers.BertForMaskedLM)
    sd = mlm.state_dict()
    assert any(k.startswith("cls.") for k in sd) and all(k.startswith(("bert.", "cls.")) for k in sd)
    ours = ours_from_hf(sd, cfg)
    ids, am, types = inputs()
    with torch.no_grad():
        ref = mlm.bert(ids, attention_mask=am, token_type_ids=types).last_hidden_state
        got = ours(ids, attention_mask=am, token_type_ids=types)
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)


def test_pretraining_checkpoint_converts_with_pooler():
    cfg = tiny_cfg(pooler=True)
    pre = hf_bert(cfg, seed=10, cls=transformers.BertForPreTraining)
    ours = ours_from_hf(pre.state_dict(), cfg)
    ids, am, types = inputs()
    with torch.no_grad():
        ref = pre.bert(ids, attention_mask=am, token_type_ids=types)
        tokens = ours(ids, attention_mask=am, token_type_ids=types)
    torch.testing.assert_close(ours.pooled(tokens), ref.pooler_output, atol=ATOL, rtol=0)


def test_tf_style_layernorm_names_convert():
    cfg = tiny_cfg()
    sd = hf_bert(cfg).state_dict()
    renamed = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
               for k, v in sd.items()}  # fmt: skip
    assert any(k.endswith("gamma") for k in renamed)
    a, b = state_dict_from_hf(sd, cfg), state_dict_from_hf(renamed, cfg)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_no_token_types_exports_a_zero_row():
    cfg = tiny_cfg(type_vocab_size=0)
    ours = randomise_(build_backbone(cfg), seed=11)
    assert ours.type_embed is None
    hf_sd = state_dict_to_hf(ours.state_dict(), cfg)
    assert hf_sd["embeddings.token_type_embeddings.weight"].abs().sum() == 0
    hf = transformers.BertModel(transformers.BertConfig(**config_to_hf(cfg))).eval()
    hf.load_state_dict(hf_sd, strict=True)
    ids, am, _ = inputs()
    with torch.no_grad():
        ref = hf(ids, attention_mask=am).last_hidden_state
        torch.testing.assert_close(ours(ids, attention_mask=am), ref, atol=ATOL, rtol=0)
    hf_sd["embeddings.token_type_embeddings.weight"] = torch.ones(1, 32)
    with pytest.raises(ValueError, match="type_vocab_size"):
        state_dict_from_hf(hf_sd, cfg)


def test_decoder_with_cross_attention_matches_hf_bert_lm_head_model():
    """The image-to-text decoder: a causal BERT with cross-attention over encoder states, against
    HF ``BertLMHeadModel(is_decoder, add_cross_attention)`` given the same weights and states: the
    hidden states, the LM loss (our LMHead tied, HF's shifted labels) and the gradients of the
    states; and the round trip of the weights back to HF."""
    from convergent.converters.hf_bert import lm_head_from_hf
    from convergent.heads.lm_head import LMHead

    cfg = tiny_cfg(causal=True, cross_attention=True, pooler=False)
    hf = hf_bert(cfg, cls=transformers.BertLMHeadModel)
    with torch.no_grad():  # tie the decoder to the word embeddings, as ours
        hf.cls.predictions.decoder.weight.copy_(hf.bert.embeddings.word_embeddings.weight)
    ours = ours_from_hf(hf.state_dict(), cfg)
    head = LMHead(cfg.embed_dim, VOCAB, cfg.act, cfg.norm_eps)
    head.load_state_dict(lm_head_from_hf(hf.state_dict()))
    ids, am, _ = inputs()
    g = torch.Generator().manual_seed(5)
    states = torch.randn(3, 7, cfg.embed_dim, generator=g)
    states_mask = torch.ones(3, 7, dtype=torch.long)
    states_mask[1, 4:] = 0
    s_hf, s_ours = states.clone().requires_grad_(True), states.clone().requires_grad_(True)
    labels = ids.masked_fill(am == 0, -100)
    ref = hf(ids, attention_mask=am, encoder_hidden_states=s_hf, encoder_attention_mask=states_mask,
             labels=labels, use_cache=False, output_hidden_states=True)  # fmt: skip
    tokens, _ = ours.forward_intermediates(ids, attention_mask=am, states=s_ours, states_mask=states_mask.bool())
    real = am.bool()
    torch.testing.assert_close(tokens[real], ref.hidden_states[-1][real], atol=ATOL, rtol=ATOL)
    logits = head(tokens, ours.word_embed.weight)[:, :-1]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(loss, ref.loss, atol=ATOL, rtol=ATOL)
    loss.backward()
    ref.loss.backward()
    torch.testing.assert_close(s_ours.grad, s_hf.grad, atol=ATOL, rtol=GRAD_RTOL)
    assert s_ours.grad[1, 4:].abs().max() == 0  # padded states are not attended to
    back = state_dict_to_hf(ours.state_dict(), cfg)
    expected = {k: v for k, v in hf.bert.state_dict().items() if k in back}
    assert set(back) == set(expected)
    for k, v in expected.items():
        assert torch.equal(back[k], v), k
    with pytest.raises(ValueError, match="pass the encoder's states"):
        ours(ids)
