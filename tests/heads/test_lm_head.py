"""``heads/lm_head.py``: ``LMHead`` against a hand-written dense → activation → LayerNorm → tied
decoder for each activation, gradients reaching the embedding table it is given (the tie), the
state dict without the table, BERT's initialisation, clear errors."""

import math

import pytest
import torch

from convergent.heads.lm_head import LMHead
from tests.conftest import randomize_

DIM, VOCAB = 12, 30


def reference_lm_head(head: LMHead, x: torch.Tensor, embedding: torch.Tensor, act: str, eps: float) -> torch.Tensor:
    """``x`` ``(B, L, dim)`` → ``(B, L, V)`` in float64, one token at a time with head's weights:
    h = act(W x + b); h = (h - mean) / sqrt(biased var + eps) · γ + β; logits = E h + bias."""
    w, b = head.dense.weight.double(), head.dense.bias.double()
    gamma, beta = head.norm.weight.double(), head.norm.bias.double()
    e, out_bias = embedding.double(), head.bias.double()
    out = torch.zeros(*x.shape[:-1], e.shape[0], dtype=torch.float64)
    for i in range(x.shape[0]):
        for t in range(x.shape[1]):
            h = w @ x[i, t].double() + b  # (dim,)
            if act == "gelu":
                h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
            elif act == "gelu_tanh":
                h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
            else:  # relu
                h = h.clamp_min(0)
            mean = h.mean()
            var = ((h - mean) ** 2).mean()
            h = (h - mean) / torch.sqrt(var + eps) * gamma + beta
            out[i, t] = e @ h + out_bias  # (V,)
    return out


@pytest.mark.parametrize("act, eps", [("gelu", 1e-12), ("gelu_tanh", 1e-5), ("relu", 1e-6)])
def test_matches_reference(act, eps):
    head = randomize_(LMHead(DIM, VOCAB, act=act, eps=eps), 0.5)
    x, embedding = torch.randn(2, 5, DIM), torch.randn(VOCAB, DIM) * 0.5  # (B, L, dim), (V, dim)
    got = head(x, embedding)
    assert got.shape == (2, 5, VOCAB)
    torch.testing.assert_close(got, reference_lm_head(head, x, embedding, act, eps).float(), atol=2e-6, rtol=1e-6)


def test_gradients_reach_the_tied_embedding_and_the_head():
    head = randomize_(LMHead(DIM, VOCAB), 0.5)
    x = torch.randn(2, 4, DIM, requires_grad=True)
    embedding = (torch.randn(VOCAB, DIM) * 0.5).requires_grad_(True)  # the backbone's word embeddings
    inputs = [x, embedding, *head.parameters()]
    g = torch.randn(2, 4, VOCAB)
    got = torch.autograd.grad((head(x, embedding) * g).sum(), inputs)
    want = torch.autograd.grad((reference_lm_head(head, x, embedding, "gelu", 1e-12) * g.double()).sum(), inputs)
    for a, b in zip(got, want):
        assert b.abs().max() > 0
        torch.testing.assert_close(a, b.float(), atol=5e-6, rtol=1e-5)


def test_state_dict_holds_no_embedding_and_init_is_berts():
    head = LMHead(64, VOCAB)
    assert set(head.state_dict()) == {"dense.weight", "dense.bias", "norm.weight", "norm.bias", "bias"}
    assert head.dense.weight.std().item() == pytest.approx(0.02, rel=0.1)  # normal(0, 0.02), 4096 draws
    assert not head.dense.bias.any() and not head.norm.bias.any() and not head.bias.any()
    assert torch.equal(head.norm.weight, torch.ones(64)) and head.norm.eps == 1e-12


def test_clear_errors():
    head = LMHead(DIM, VOCAB)
    with pytest.raises(ValueError, match="tied embedding has 29 rows, but the LM head was built for vocab_size 30"):
        head(torch.randn(1, 2, DIM), torch.randn(VOCAB - 1, DIM))
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        LMHead(DIM, VOCAB, act="swish")
