"""TextTransformer: shapes, intermediates, masking, causality, padding, checkpointing, metadata."""

import pytest
import torch

from convergent.backbones import TextConfig, build_backbone
from convergent.backbones.text import TextTransformer

VOCAB = 101


def tiny(**kw) -> TextTransformer:
    base = dict(
        vocab_size=VOCAB, max_position=16, type_vocab_size=2, embed_dim=32, depth=3, num_heads=4,
        mlp_dim=64, dropout=0.0, attn_dropout=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    return build_backbone(TextConfig(**{**base, **kw})).eval()


def ids(b: int = 2, n: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, VOCAB, (b, n), generator=torch.Generator().manual_seed(seed))


def test_registered_variant_builds_and_runs():
    model = build_backbone("text_test")
    assert isinstance(model, TextTransformer)
    x = torch.randint(0, model.config.vocab_size, (2, 7))
    assert model(x).shape == (2, 7, model.embed_dim)


@pytest.mark.parametrize("pooler", [False, True])
def test_shapes_and_pooled(pooler):
    model = tiny(pooler=pooler)
    assert model.embed_dim == model.num_features == 32
    assert model.supports_mask_token and model.supports_causal and not model.supports_token_drop
    tokens = model(ids())
    assert tokens.shape == (2, 10, 32)
    pooled = model.pooled(tokens)
    assert pooled.shape == (2, 32)
    if pooler:
        torch.testing.assert_close(pooled, torch.tanh(model.pooler.dense(tokens[:, 0])))
        assert pooled.abs().max() < 1
    else:
        assert torch.equal(pooled, tokens[:, 0])


def test_intermediates_indices():
    model = tiny()
    x = ids()
    with torch.no_grad():
        final, every = model.forward_intermediates(x)
        assert len(every) == 3
        torch.testing.assert_close(every[-1], final)  # post-norm: no final norm after the last block
        assert not torch.allclose(every[0], every[1])
        _, last2 = model.forward_intermediates(x, indices=2)
        _, picked = model.forward_intermediates(x, indices=[-1, 0])
        _, none = model.forward_intermediates(x, indices=[])
        features = model.forward_features(x)
    assert len(last2) == 2 and torch.equal(last2[0], every[1]) and torch.equal(last2[1], every[2])
    assert len(picked) == 2 and torch.equal(picked[0], every[0]) and torch.equal(picked[1], every[2])
    assert none == []
    torch.testing.assert_close(features, final)
    with pytest.raises(IndexError, match="out of range"):
        model.forward_intermediates(x, indices=[3])


def test_causal_output_does_not_see_the_future():
    model = tiny(causal=True)
    x = ids(n=12)
    t = 5
    y = x.clone()
    y[:, t + 1 :] = ids(n=12, seed=1)[:, t + 1 :]
    with torch.no_grad():
        a, b = model(x), model(y)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], atol=1e-6, rtol=0)
    assert (a[:, t + 1 :] - b[:, t + 1 :]).abs().max() > 1e-3
    # the bidirectional model does see the future
    bi = tiny(causal=False)
    with torch.no_grad():
        assert (bi(x)[:, : t + 1] - bi(y)[:, : t + 1]).abs().max() > 1e-3


@pytest.mark.parametrize("causal", [False, True])
def test_padding_content_is_invisible(causal):
    model = tiny(causal=causal)
    x = ids(n=12)
    am = torch.ones_like(x)
    am[0, :3] = 0  # left padding: matters to causal attention too
    am[1, 9:] = 0  # right padding
    y = torch.where(am.bool(), x, ids(n=12, seed=2))  # other garbage in the padding
    with torch.no_grad():
        a = model(x, attention_mask=am)
        b = model(y, attention_mask=am)
        c = model(y)  # without the mask, padding is attended to
    real = am.bool()
    torch.testing.assert_close(a[real], b[real], atol=1e-6, rtol=0)
    assert (a[0][real[0]] - c[0][real[0]]).abs().max() > 1e-3


def test_learned_mask_token_replaces_word_embedding():
    model = tiny()
    assert model.mask_token is not None and model.mask_token.shape == (1, 1, 32)
    x = ids()
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[0, 3] = mask[1, [0, 6]] = True
    with torch.no_grad():
        model.mask_token.copy_(model.word_embed.weight[7])  # mask token = embedding of id 7
        got = model(x, mask=mask)
        want = model(x.masked_fill(mask, 7))
        plain = model(x)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert (got - plain).abs().max() > 1e-3
    with pytest.raises(ValueError, match="does not match tokens"):
        model(x, mask=mask[:, :5])


def test_mask_token_id_uses_the_vocabulary():
    model = tiny(mask_token_id=4)
    assert model.mask_token is None and "mask_token" not in dict(model.named_parameters())
    x = ids()
    mask = x > 50
    with torch.no_grad():
        torch.testing.assert_close(model(x, mask=mask), model(x.masked_fill(mask, 4)), atol=1e-6, rtol=0)


def test_token_types_and_positions():
    model = tiny()
    x = ids()
    zeros = torch.zeros_like(x)
    with torch.no_grad():
        base = model(x)
        torch.testing.assert_close(model(x, token_type_ids=zeros), base)  # HF default: type 0
        torch.testing.assert_close(model(x, position_ids=torch.arange(10)), base)
        assert (model(x, token_type_ids=torch.ones_like(x)) - base).abs().max() > 1e-3
        assert (model(x, position_ids=torch.arange(10) + 3) - base).abs().max() > 1e-3
    no_types = tiny(type_vocab_size=0)
    assert no_types.type_embed is None
    with torch.no_grad():
        torch.testing.assert_close(no_types(x, token_type_ids=zeros), no_types(x))


def test_gradient_checkpointing_gives_the_same_grads():
    model = tiny(causal=True, pooler=True)
    model.train()  # checkpointing is active in training only (dropout is 0)
    x = ids()
    am = torch.ones_like(x)
    am[1, 6:] = 0

    def grads():
        model.zero_grad()
        tokens = model(x, attention_mask=am)
        (tokens.square().mean() + model.pooled(tokens).sum()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.set_grad_checkpointing(True)
    calls = []
    hook = model.blocks[0].register_forward_pre_hook(lambda *_: calls.append(1))
    ckpt = grads()
    hook.remove()
    assert len(calls) == 2  # the block was run again during backward
    assert plain.keys() == ckpt.keys() and len(plain) > 10
    for n in plain:
        torch.testing.assert_close(ckpt[n], plain[n], atol=1e-6, rtol=1e-5, msg=n)


def test_no_weight_decay_and_layer_ids():
    model = tiny(pooler=True)
    names = dict(model.named_parameters())
    nwd = model.no_weight_decay()
    assert nwd <= names.keys()
    assert {"pos_embed.weight", "type_embed.weight", "mask_token", "embed_norm.weight", "blocks.0.norm2.weight"} <= nwd
    assert all(n in nwd for n in names if n.endswith(".bias"))
    decayed = names.keys() - nwd
    embeddings_without_decay = ("pos_embed.weight", "type_embed.weight")
    assert decayed == {n for n, p in names.items() if p.ndim == 2 and n not in embeddings_without_decay}
    assert "word_embed.weight" in decayed and "pooler.dense.weight" in decayed

    assert model.num_layers == 3 + 2
    assert model.layer_id("word_embed.weight") == model.layer_id("mask_token") == 0
    assert model.layer_id("embed_norm.bias") == model.layer_id("pos_embed.weight") == 0
    assert model.layer_id("blocks.0.attn.qkv.weight") == 1
    assert model.layer_id("blocks.2.mlp.fc2.bias") == 3
    assert model.layer_id("pooler.dense.weight") == 4
    assert all(0 <= model.layer_id(n) < model.num_layers for n in names)


def test_bert_init():
    model = tiny(pad_token_id=0)
    assert abs(model.blocks[0].attn.qkv.weight.std().item() - 0.02) < 0.003
    assert abs(model.word_embed.weight[1:].std().item() - 0.02) < 0.003
    assert model.word_embed.weight[0].abs().sum() == 0  # padding row, as HF
    assert torch.all(model.blocks[1].mlp.fc1.bias == 0)
    assert torch.all(model.blocks[1].norm1.weight == 1) and torch.all(model.embed_norm.bias == 0)


def test_bad_inputs_are_clear_errors():
    model = tiny()
    with pytest.raises(ValueError, match="sequence length 17 exceeds max_position 16"):
        model(ids(n=17))
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 101\).*vocab_size=101"):
        model(torch.tensor([[1, 2, 101]]))
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.tensor([[1, -1]]))
    with pytest.raises(ValueError, match="type_vocab_size=2"):
        model(ids(), token_type_ids=torch.full((2, 10), 2))
    with pytest.raises(ValueError, match="max_position=16"):
        model(ids(), position_ids=torch.arange(10) + 10)
    with pytest.raises(ValueError, match="attention_mask of shape"):
        model(ids(), attention_mask=torch.ones(2, 9))
    with pytest.raises(ValueError, match=r"shape \(B, L\)"):
        model(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="mask_token_id 101"):
        tiny(mask_token_id=101)


def test_compiles_without_graph_breaks():
    """Input checks are value-dependent, so they are skipped while compiling (fullgraph)."""
    model = tiny(causal=True, pooler=True)
    x = ids()
    am = torch.ones_like(x)
    am[1, 6:] = 0
    mask = x > 60
    compiled = torch.compile(model.forward_intermediates, fullgraph=True, backend="eager")
    with torch.no_grad():
        got, inter = compiled(x, mask=mask, attention_mask=am, token_type_ids=torch.zeros_like(x), indices=[0])
        want, ref = model.forward_intermediates(x, mask=mask, attention_mask=am, indices=[0])
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(inter[0], ref[0])


@pytest.mark.parametrize("causal", [False, True])
def test_forward_tokens_over_embed_is_forward_features(causal):
    torch.manual_seed(0)
    model = build_backbone("text_test", causal=causal, dropout=0.0, attn_dropout=0.0).eval()
    ids = torch.randint(4, model.vocab_size, (2, 7))
    with torch.no_grad():
        expected, inter = model.forward_intermediates(ids, indices=[0])
        got, outs = model.forward_tokens(model.embed(ids), indices=[0])
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(outs[0], inter[0])
    assert model.supports_joint_tokens


@pytest.mark.parametrize("pre_norm", [False, True], ids=["bert", "pre-norm"])
def test_kv_cache_gives_the_outputs_of_the_whole_sequence(pre_norm):
    from convergent.layers import KVCache

    torch.manual_seed(0)
    model = build_backbone("text_test", causal=True, pre_norm=pre_norm, dropout=0.0, attn_dropout=0.0).eval()
    ids = torch.randint(4, model.vocab_size, (2, 9))
    with torch.no_grad():
        whole = model.forward_tokens(model.embed(ids))[0]  # (2, 9, C)
        cache = KVCache(len(model.blocks))
        steps = [model.forward_tokens(model.embed(ids[:, :5]), cache=cache)[0]]  # the prompt
        for t in range(5, 9):
            x = model.embed(ids[:, t : t + 1], position_ids=torch.tensor([t]))
            steps.append(model.forward_tokens(x, cache=cache)[0])
    torch.testing.assert_close(torch.cat(steps, dim=1), whole, atol=1e-5, rtol=1e-5)
    assert cache.length == 9
    cache.reorder(torch.tensor([1, 1]))
    assert torch.equal(cache.blocks[0]["k"][0], cache.blocks[0]["k"][1])
    with pytest.raises(ValueError, match="one new token per row"):
        model.forward_tokens(model.embed(ids[:, :2]), cache=cache)
    with pytest.raises(ValueError, match="needs a causal backbone"):
        build_backbone("text_test").forward_tokens(model.embed(ids), cache=KVCache(2))
