"""BERT's language-model head, shared by masked (``tasks/mlm``) and causal
(``tasks/causal_lm``) language modelling.

``logits = norm(act(dense(x))) @ Eᵀ + bias`` with ``E`` the backbone's word-embedding table
(Press & Wolf, 2017: tying input and output embeddings), exactly HF ``BertLMPredictionHead``
(``cls.predictions``: ``transform.dense``, ``transform.LayerNorm``, the tied ``decoder`` and
its own ``bias``).

The head does not hold ``E``: the task passes the embedding weight to :meth:`LMHead.forward`,
so the tie survives ``load_state_dict``, ``.to()`` and FSDP wrapping, and the weights appear
once in a state dict (``head.dense``, ``head.norm``, ``head.bias``; see
``convergent.converters.hf_bert.lm_head_from_hf`` for the HF key map).
"""

import torch
from torch import nn

from convergent.layers.linear import Linear, linear
from convergent.layers.mlp import _activation


class LMHead(nn.Module):
    """Token features ``(..., dim)`` → vocabulary logits ``(..., vocab_size)``.

    Args:
        dim: token width (the backbone's ``num_features``; also the embedding width).
        vocab_size: rows of the tied embedding table.
        act: activation after the dense layer (``gelu``, ``gelu_tanh`` or ``relu``; BERT: the
            encoder's ``hidden_act``).
        eps: LayerNorm epsilon (BERT: the encoder's ``layer_norm_eps``).
    """

    def __init__(self, dim: int, vocab_size: int, act: str = "gelu", eps: float = 1e-12):
        super().__init__()
        self.vocab_size = vocab_size
        self.dense = Linear(dim, dim)
        self.act = _activation(act)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """BERT: dense ~ normal(0, 0.02) with zero bias, LayerNorm at identity, zero output bias."""
        nn.init.normal_(self.dense.weight, std=0.02)
        nn.init.zeros_(self.dense.bias)
        nn.init.ones_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """``x`` ``(..., dim)`` and the tied word-embedding table ``(vocab_size, dim)`` →
        logits ``(..., vocab_size)``."""
        if embedding.shape[0] != self.vocab_size:
            raise ValueError(
                f"tied embedding has {embedding.shape[0]} rows, but the LM head was built for "
                f"vocab_size {self.vocab_size}"
            )
        h = self.norm(self.act(self.dense(x)))  # (..., dim)
        return linear(h, embedding, self.bias)  # (..., V)
