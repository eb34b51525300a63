"""Text Transformer encoder, bidirectional or causal, in two layouts.

The default layout follows BERT (Devlin et al., 2019) and HF ``BertModel`` exactly, so
weights convert both ways (``convergent.converters.hf_bert``):

* embeddings: word + learned absolute position + token type (optional), LayerNorm, dropout;
* blocks: ``x = norm1(x + drop(attn(x)))``; ``x = norm2(x + drop(mlp(x)))``;
* no final norm (the last block already ends in one); optional dense+tanh pooler.

``pre_norm=True`` gives the GPT-2 / CLIP layout (HF ``CLIPTextModel``, converted by
``convergent.converters.hf_clip``): embeddings without LayerNorm, the shared pre-norm
:class:`~convergent.layers.Block` (``x + attn(norm1(x))``; ``x + mlp(norm2(x))``) and a final
LayerNorm; the word embedding has no frozen padding row. Parameter names are the same in
both layouts (``blocks.i.{norm1, attn, norm2, mlp}``), plus ``norm`` for the final LayerNorm.

``causal=True`` gives GPT-style left-to-right attention (HF ``BertModel`` with
``is_decoder=True``, CLIP's text tower); masked positions (MLM, data2vec students) take the
word embedding of ``mask_token_id``, or a learned mask token when that is None.
"""

from typing import Any

import torch
from torch import nn

from convergent.backbones.protocol import TextBackbone, apply_mask_token, check_intermediate_output, select_indices
from convergent.backbones.text_spec import TextConfig
from convergent.layers import Attention, Block, CrossAttention, KVCache, Mlp, init_linear_norm_
from convergent.layers.linear import Linear
from convergent.layers.unpad import Unpadded

_EMBED_PREFIXES = ("word_embed.", "pos_embed.", "type_embed.", "embed_norm.", "mask_token")


class TextBlock(nn.Module):
    """Post-norm Transformer block (BERT): the residual sum is normalised after each branch.

    Dropout is applied once per branch, after the output projection, as in BERT (our
    ``Mlp`` is built without its inner dropout so the activations are not dropped too).
    """

    def __init__(self, config: TextConfig):
        super().__init__()
        dim = config.embed_dim
        self.causal = config.causal
        self.attn = Attention(dim, config.num_heads, qkv_bias=True, attn_drop=config.attn_dropout)
        self.norm1 = nn.LayerNorm(dim, eps=config.norm_eps)
        self.mlp = Mlp(dim, config.mlp_dim, dropout=0.0, act=config.act)
        self.norm2 = nn.LayerNorm(dim, eps=config.norm_eps)
        self.drop = nn.Dropout(config.dropout)
        if config.cross_attention:
            self.cross_attn = CrossAttention(dim, config.num_heads, qkv_bias=True, attn_drop=config.attn_dropout)
            self.norm_cross = nn.LayerNorm(dim, eps=config.norm_eps)
        else:
            self.cross_attn = self.norm_cross = None

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        unpadded: Unpadded | None = None,
        return_ffn: bool = False,
        states: torch.Tensor | None = None,
        states_mask: torch.Tensor | None = None,
        kv: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``(B, L, C)`` → ``(B, L, C)``; ``key_padding_mask`` ``(B, L)`` bool, True = real token;
        with ``unpadded``, packed real tokens ``(T, C)`` → ``(T, C)``. ``return_ffn``: also the
        feed-forward output before dropout, the residual and ``norm2`` (fairseq's ``fc_result``).
        ``states`` ``(B, M, C)`` (and ``states_mask``): what a cross-attention block attends over;
        ``kv``: this block's entry of a :class:`~convergent.layers.attention.KVCache`."""
        attn = self.attn(x, key_padding_mask=key_padding_mask, causal=self.causal, unpadded=unpadded, kv=kv)
        x = self.norm1(x + self.drop(attn))
        if self.cross_attn is not None:
            x = self.norm_cross(x + self.drop(self.cross_attn(x, states, states_mask)))
        ffn = self.mlp(x)
        x = self.norm2(x + self.drop(ffn))
        return (x, ffn) if return_ffn else x


class Pooler(nn.Module):
    """BERT's pooler: ``tanh(dense(first token))``."""

    def __init__(self, dim: int):
        super().__init__()
        self.dense = Linear(dim, dim)

    def forward(self, first: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(first))  # (B, C)


class TextTransformer(TextBackbone):
    """Text encoder (BERT or, with ``pre_norm``, GPT-2 / CLIP layout) behind the :class:`Backbone` contract.

    Inputs are token ids ``(B, L)``; keyword inputs (all optional) follow HF ``BertModel``:
    ``attention_mask`` ``(B, L)`` (1/True real token, 0/False padding), ``token_type_ids``
    ``(B, L)`` and ``position_ids`` (``(B, L)`` or ``(L,)``; default ``0..L-1``).
    """

    supports_mask_token = True
    supports_token_drop = False
    supports_causal = True
    supports_joint_tokens = True
    extra_input_keys = ("attention_mask", "token_type_ids")
    supports_unpad = True
    supports_ffn_targets = True

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.word_embed

    @property
    def first_token_summarises(self) -> bool:
        """The tokenizer's leading [CLS] summarises the text, unless attention is causal."""
        return not self.config.causal

    def __init__(self, config: TextConfig):
        super().__init__(config)
        dim = config.embed_dim
        if not 0 <= config.pad_token_id < config.vocab_size:
            raise ValueError(f"pad_token_id {config.pad_token_id} is outside the vocabulary of {config.vocab_size}")
        if config.mask_token_id is not None and not 0 <= config.mask_token_id < config.vocab_size:
            raise ValueError(f"mask_token_id {config.mask_token_id} is outside the vocabulary of {config.vocab_size}")
        self.embed_dim = self.num_features = dim
        # BERT never trains the padding row; GPT-2 / CLIP have none (CLIP pads with end-of-text)
        padding_idx = None if config.pre_norm else config.pad_token_id
        self.word_embed = nn.Embedding(config.vocab_size, dim, padding_idx=padding_idx)
        self.pos_embed = nn.Embedding(config.max_position, dim)
        self.type_embed = nn.Embedding(config.type_vocab_size, dim) if config.type_vocab_size > 0 else None
        # a separate learned mask token only when no vocabulary id plays that role
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim)) if config.mask_token_id is None else None
        self.embed_norm = None if config.pre_norm else nn.LayerNorm(dim, eps=config.norm_eps)
        self.embed_drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([_block(config) for _ in range(config.depth)])
        self.norm = nn.LayerNorm(dim, eps=config.norm_eps) if config.pre_norm else None
        self.pooler = Pooler(dim) if config.pooler else None
        self.apply(_init_weights)
        if self.mask_token is not None:
            nn.init.normal_(self.mask_token, std=0.02)

    # --- forward ------------------------------------------------------------------------
    def embed(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token ids ``(B, L)`` → embeddings ``(B, L, C)`` (normalised in the BERT layout);
        ``mask`` ``(B, L)`` bool replaces the word embedding of masked positions by the mask token."""
        self._check_inputs(input_ids, token_type_ids, position_ids)
        x = self.word_embed(input_ids)  # (B, L, C)
        x = apply_mask_token(x, mask, self._mask_embedding())
        if position_ids is None:
            x = x + self.pos_embed.weight[: input_ids.shape[1]]  # (L, C) broadcasts over B
        else:
            x = x + self.pos_embed(position_ids)
        if self.type_embed is not None:
            # HF defaults missing token types to 0
            x = x + (self.type_embed.weight[0] if token_type_ids is None else self.type_embed(token_type_ids))
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        return self.embed_drop(x)

    def forward_intermediates(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor | None = None,
        indices: Any = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        unpad: bool = False,
        output: str = "block",
        states: torch.Tensor | None = None,
        states_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final tokens ``(B, L, C)`` and the outputs of the blocks in ``indices`` (None: all;
        int k: last k; sequence: those, negatives allowed), each ``(B, L, C)``, taken before
        the final norm of the pre-norm layout. ``output``: 'block' (the block's output) or 'ffn'
        (its feed-forward output before the last residual and, in the BERT layout, before
        ``norm2``: fairseq's ``fc_results``, data2vec's text targets).

        ``unpad``: when ``attention_mask`` has padding, run the blocks on the real tokens only
        (:mod:`convergent.layers.unpad`): the same values at real positions, zeros at padded
        ones, and no work spent on padding. For callers that read real positions only.

        ``states`` ``(B, M, C)`` / ``states_mask`` ``(B, M)``: the encoder states a decoder's
        cross-attention blocks attend over (``cross_attention``; ``unpad`` is then not used)."""
        take = set(select_indices(indices, len(self.blocks)))
        check_intermediate_output(output)
        pad_mask = None
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(
                    f"attention_mask of shape {tuple(attention_mask.shape)} does not match "
                    f"input_ids {tuple(input_ids.shape)}"
                )
            pad_mask = attention_mask.bool()  # (B, L) True = real token
        x = self.embed(input_ids, mask, token_type_ids, position_ids)
        unpadded = Unpadded(pad_mask) if unpad and pad_mask is not None and states is None else None
        if unpadded is not None and unpadded.num_tokens == pad_mask.numel():
            unpadded = None  # no padding: nothing to skip (the nonzero's sync answered it, no extra .all())
        if unpadded is not None:
            x = unpadded.pack(x)  # (T, C)
        x, outs = self._run_blocks(x, pad_mask, unpadded, take, output, states, states_mask)
        if unpadded is not None:
            x, outs = unpadded.unpack(x), [unpadded.unpack(o) for o in outs]
        return x, outs

    def forward_tokens(
        self, tokens: torch.Tensor, key_padding_mask: torch.Tensor | None = None, indices: Any = None,
        output: str = "block", states: torch.Tensor | None = None, states_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:  # fmt: skip
        """Run the blocks (causal when built so) and the final norm over already embedded tokens
        ``(B, N, C)``: the output of :meth:`embed`, or a longer sequence a task builds around it
        (text-to-image: ``[caption ; image codes]``). ``key_padding_mask`` ``(B, N)`` bool, True
        for real tokens; ``indices`` / ``output`` as in :meth:`forward_intermediates`; ``states``
        as there. ``cache`` (a causal backbone, incremental decoding): a :class:`KVCache` of
        ``depth`` entries that the first call fills and each later call, of one new token per row
        (embedded at its own position), extends; the same outputs as the whole sequence at once."""
        take = set(select_indices(indices, len(self.blocks)))
        check_intermediate_output(output)
        if cache is not None and (not self.config.causal or len(cache.blocks) != len(self.blocks) or output != "block"):
            raise ValueError(f"a KV cache needs a causal backbone, one entry per block ({len(self.blocks)}) and "
                             "output 'block'")  # fmt: skip
        return self._run_blocks(tokens, key_padding_mask, None, take, output, states, states_mask, cache)

    def _run_blocks(self, x: torch.Tensor, pad_mask, unpadded, take: set[int], output: str, states=None,
                    states_mask=None, cache: KVCache | None = None):  # fmt: skip
        """The blocks over ``x``, collecting the outputs of ``take``; then the final norm."""
        if self.config.cross_attention and states is None:
            raise ValueError("this text backbone has cross-attention: pass the encoder's states (states=...)")
        if states is not None and not self.config.cross_attention:
            raise ValueError("encoder states need a text backbone built with cross_attention true")
        extra = () if states is None else (states, states_mask)  # TextBlock's inputs after return_ffn
        outs = []
        for i, block in enumerate(self.blocks):
            if cache is not None:  # incremental decoding: no checkpointing, block outputs only
                x = block(x, pad_mask, kv=cache.blocks[i], **dict(zip(("states", "states_mask"), extra)))
                if i in take:
                    outs.append(x)
                continue
            if i in take and output == "ffn":
                x, ffn = self.run_block(block, x, pad_mask, unpadded, True, *extra)
                outs.append(ffn)
                continue
            x = self.run_block(block, x, pad_mask, unpadded, False, *extra)
            if i in take:
                outs.append(x)
        x = x if self.norm is None else self.norm(x)
        return x, outs

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, L, C)`` → ``(B, C)``: the first token, through the pooler when there is one."""
        first = tokens[:, 0]
        return self.pooler(first) if self.pooler is not None else first

    def mask_grid(self, input_ids: torch.Tensor) -> tuple[int, ...]:
        """``(L,)``: every token position can be hidden."""
        return (input_ids.shape[-1],)

    @property
    def final_stage_depth(self) -> int:
        return len(self.blocks)

    # --- training metadata --------------------------------------------------------------
    def no_weight_decay(self) -> set[str]:
        """Biases, LayerNorm weights, position / token-type embeddings and the mask token."""
        names = {n for n, _ in self.named_parameters() if n.endswith(".bias")}
        names |= {f"{n}.weight" for n, m in self.named_modules() if isinstance(m, nn.LayerNorm)}
        names.add("pos_embed.weight")
        if self.type_embed is not None:
            names.add("type_embed.weight")
        if self.mask_token is not None:
            names.add("mask_token")
        return names

    @property
    def num_layers(self) -> int:
        """Embeddings (0), one per block (1..depth), then the final norm / pooler (depth + 1)."""
        return len(self.blocks) + 2

    def layer_id(self, name: str) -> int:
        """Layer-decay group of parameter ``name`` (as in ``named_parameters``): the final norm
        and the pooler get the top group."""
        if name.startswith(_EMBED_PREFIXES):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return len(self.blocks) + 1

    # --- helpers ------------------------------------------------------------------------
    def _mask_embedding(self) -> torch.Tensor:
        """The vector masked positions take, ``(1, 1, C)``."""
        if self.mask_token is not None:
            return self.mask_token
        return self.word_embed.weight[self.config.mask_token_id].view(1, 1, -1)

    def _check_inputs(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None, position_ids: torch.Tensor | None
    ) -> None:
        """Clear errors instead of an index error deep inside ``nn.Embedding`` (or a CUDA
        device assert). Value checks are skipped while compiling to avoid graph breaks."""
        cfg = self.config
        if input_ids.ndim != 2:
            raise ValueError(f"expected input_ids of shape (B, L), got {tuple(input_ids.shape)}")
        length = input_ids.shape[1]
        if position_ids is None and length > cfg.max_position:
            raise ValueError(f"sequence length {length} exceeds max_position {cfg.max_position}")
        if torch.compiler.is_compiling():
            return
        _check_range("input_ids", input_ids, cfg.vocab_size, "vocab_size")
        if token_type_ids is not None:
            if token_type_ids.shape != input_ids.shape:
                raise ValueError(
                    f"token_type_ids of shape {tuple(token_type_ids.shape)} does not match "
                    f"input_ids {tuple(input_ids.shape)}"
                )
            # without token-type embeddings only type 0 (which adds nothing) is meaningful
            _check_range("token_type_ids", token_type_ids, max(cfg.type_vocab_size, 1), "type_vocab_size")
        if position_ids is not None:
            _check_range("position_ids", position_ids, cfg.max_position, "max_position")


def _block(config: TextConfig) -> nn.Module:
    """One block of the configured layout: BERT's post-norm or the shared pre-norm one."""
    if not config.pre_norm:
        return TextBlock(config)
    return Block(
        config.embed_dim, config.num_heads, config.mlp_dim, qkv_bias=True, dropout=config.dropout,
        attn_dropout=config.attn_dropout, eps=config.norm_eps, act=config.act, causal=config.causal,
    )  # fmt: skip


def _check_range(name: str, ids: torch.Tensor, size: int, size_name: str) -> None:
    if ids.numel() and bool(((ids < 0) | (ids >= size)).any()):  # one host sync
        raise ValueError(
            f"{name} must lie in [0, {size}) ({size_name}={size}), got values in "
            f"[{int(ids.min())}, {int(ids.max())}]"
        )


@torch.no_grad()
def _init_weights(module: nn.Module) -> None:
    """BERT init: normal(0.02) weights, zero biases, LayerNorm ones/zeros, zero pad row."""
    init_linear_norm_(module, std=0.02, truncated=False)
    if isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
        if module.padding_idx is not None:
            module.weight[module.padding_idx].zero_()
