"""HF ``transformers`` BERT ⇄ :class:`~convergent.backbones.text.TextTransformer`.

Pure functions over config dicts and state dicts; ``transformers`` is never imported.

Key map (HF ``BertModel`` → ours; ``BertForMaskedLM`` / ``BertForPreTraining`` keys lose
their ``bert.`` prefix first and their ``cls.`` heads are ignored):

====================================================  =====================================
``embeddings.word_embeddings.weight``                 ``word_embed.weight``
``embeddings.position_embeddings.weight``             ``pos_embed.weight``
``embeddings.token_type_embeddings.weight``           ``type_embed.weight``
``embeddings.LayerNorm.{weight,bias}``                ``embed_norm.{weight,bias}``
``encoder.layer.i.attention.self.{query,key,value}``  ``blocks.i.attn.qkv`` (concatenated)
``encoder.layer.i.attention.output.dense``            ``blocks.i.attn.proj``
``encoder.layer.i.attention.output.LayerNorm``        ``blocks.i.norm1``
``encoder.layer.i.intermediate.dense``                ``blocks.i.mlp.fc1``
``encoder.layer.i.output.dense``                      ``blocks.i.mlp.fc2``
``encoder.layer.i.output.LayerNorm``                  ``blocks.i.norm2``
``encoder.layer.i.crossattention.self.query``         ``blocks.i.cross_attn.q``
``encoder.layer.i.crossattention.self.{key,value}``   ``blocks.i.cross_attn.kv`` (concatenated)
``encoder.layer.i.crossattention.output.dense``       ``blocks.i.cross_attn.proj``
``encoder.layer.i.crossattention.output.LayerNorm``   ``blocks.i.norm_cross``
``pooler.dense``                                      ``pooler.dense``
====================================================  =====================================

The ``crossattention`` keys exist with ``add_cross_attention`` (``cross_attention`` here).

The LM head (``BertForMaskedLM`` / ``BertForPreTraining`` / ``BertLMHeadModel``
``cls.predictions``) maps onto :class:`~convergent.heads.lm_head.LMHead` with
:func:`lm_head_from_hf` / :func:`lm_head_to_hf`:

=====================================================  ==============================
``cls.predictions.transform.dense.{weight,bias}``      ``dense.{weight,bias}``
``cls.predictions.transform.LayerNorm.{weight,bias}``  ``norm.{weight,bias}``
``cls.predictions.bias``                               ``bias``
``cls.predictions.decoder.weight``                     tied: the word embeddings
``cls.predictions.decoder.bias``                       tied: ``cls.predictions.bias``
=====================================================  ==============================

Two things have no counterpart on the other side:

* ``mask_token``: when ``cfg.mask_token_id`` is None our model learns a separate mask token.
  ``state_dict_from_hf`` fills it with zeros (give ``config_from_hf`` a ``mask_token_id``,
  e.g. 103 for the uncased BERT vocabulary, to use the [MASK] word embedding instead);
  ``state_dict_to_hf`` drops it.
* token types: HF always has at least one token-type row. ``type_vocab_size=0`` is exported
  as ``type_vocab_size=1`` with a zero row (token type 0 then adds nothing), and imported
  only if that row is zero.
"""

import torch

from convergent.backbones.text_spec import TextConfig
from convergent.converters.common import ACT_FROM_HF, ACT_TO_HF, KeyTracker, has_pooler, strip_prefix

# (HF suffix inside encoder.layer.i, our suffix inside blocks.i), q/k/v handled apart
_BLOCK_KEYS = (
    ("attention.output.dense", "attn.proj"),
    ("attention.output.LayerNorm", "norm1"),
    ("intermediate.dense", "mlp.fc1"),
    ("output.dense", "mlp.fc2"),
    ("output.LayerNorm", "norm2"),
)
_CROSS_KEYS = (
    ("crossattention.output.dense", "cross_attn.proj"),
    ("crossattention.output.LayerNorm", "norm_cross"),
)
_EMBED_KEYS = (
    ("embeddings.word_embeddings.weight", "word_embed.weight"),
    ("embeddings.position_embeddings.weight", "pos_embed.weight"),
    ("embeddings.LayerNorm.weight", "embed_norm.weight"),
    ("embeddings.LayerNorm.bias", "embed_norm.bias"),
)
# buffers that older checkpoints saved; the model rebuilds them
_HF_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


HF_MODEL_TYPES = ("bert",)
"""``model_type`` values of the HF configs this converter reads."""
HEAD_PREFIXES = ("cls.",)
"""Task-head keys (``BertForMaskedLM`` / ``BertForPreTraining``) that conversion skips."""


def config_from_checkpoint(hf: dict, state_dict: dict) -> TextConfig:
    """Our config for a HF checkpoint: its config dict plus whether its weights hold a pooler."""
    return config_from_hf(hf, pooler=has_pooler(state_dict))


def config_from_hf(hf: dict, mask_token_id: int | None = None, pooler: bool = True) -> TextConfig:
    """Our config from a ``BertConfig.to_dict()``-style dict.

    Args:
        hf: the HF config dict.
        mask_token_id: the [MASK] id whose word embedding masked positions take (BERT
            uncased: 103); None gives a learned mask token, zero after conversion.
        pooler: whether the checkpoint has a pooler (``BertModel``'s default; False for
            ``BertForMaskedLM`` checkpoints, which have none).

    ``is_decoder`` maps to ``causal`` (HF then combines a causal mask with the padding mask,
    as we do), ``add_cross_attention`` to ``cross_attention``; ``pad_token_id=None`` becomes 0.

    Raises:
        ValueError: for architectures we do not implement (relative position embeddings,
            encoder-decoder models, other model types, unknown activations).
    """
    _check_supported(hf)
    act = hf.get("hidden_act", "gelu")
    pad = hf.get("pad_token_id")
    return TextConfig(
        vocab_size=hf["vocab_size"],
        max_position=hf["max_position_embeddings"],
        type_vocab_size=hf.get("type_vocab_size", 2),
        embed_dim=hf["hidden_size"],
        depth=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        mlp_dim=hf["intermediate_size"],
        dropout=float(hf.get("hidden_dropout_prob", 0.1)),
        attn_dropout=float(hf.get("attention_probs_dropout_prob", 0.1)),
        norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
        act=ACT_FROM_HF[act],
        pad_token_id=0 if pad is None else pad,  # HF allows None; our embedding needs a row
        mask_token_id=mask_token_id,
        causal=bool(hf.get("is_decoder", False)),
        pooler=pooler,
        cross_attention=bool(hf.get("add_cross_attention", False)),
    )


def _check_supported(hf: dict) -> None:
    problems = []
    if hf.get("model_type", "bert") != "bert":
        problems.append(f"model_type {hf['model_type']!r} (only 'bert')")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        problems.append(f"position_embedding_type {hf['position_embedding_type']!r} (only 'absolute')")
    if hf.get("hidden_act", "gelu") not in ACT_FROM_HF:
        problems.append(f"hidden_act {hf['hidden_act']!r} (supported: {sorted(ACT_FROM_HF)})")
    if hf.get("is_encoder_decoder"):
        problems.append("encoder-decoder use")
    if hf.get("embedding_size", hf.get("hidden_size")) != hf.get("hidden_size"):
        problems.append(f"embedding_size {hf['embedding_size']} != hidden_size {hf['hidden_size']}")
    if problems:
        raise ValueError("unsupported HF BERT config: " + "; ".join(problems))


def config_to_hf(cfg: TextConfig) -> dict:
    """A dict such that ``transformers.BertConfig(**d)`` builds the equivalent model.

    ``cfg.pooler`` maps to ``BertModel(..., add_pooling_layer=cfg.pooler)`` and
    ``cfg.mask_token_id`` has no HF field; ``type_vocab_size=0`` is exported as 1 (see the
    module docstring).
    """
    _check_bert_layout(cfg)
    return {
        "model_type": "bert",
        "architectures": ["BertModel"],
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.embed_dim,
        "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.mlp_dim,
        "hidden_act": ACT_TO_HF[cfg.act],
        "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.attn_dropout,
        "max_position_embeddings": cfg.max_position,
        "type_vocab_size": max(cfg.type_vocab_size, 1),
        "layer_norm_eps": cfg.norm_eps,
        "pad_token_id": cfg.pad_token_id,
        "is_decoder": cfg.causal,
        "add_cross_attention": cfg.cross_attention,
    }


def state_dict_from_hf(sd: dict, cfg: TextConfig, ignore: tuple[str, ...] = HEAD_PREFIXES) -> dict:
    """HF ``BertModel`` (or ``bert.``-prefixed ``BertFor*``) state dict → ours.

    Keys starting with an ``ignore`` prefix (task heads) are skipped; any other key not
    understood raises one ``KeyError`` listing them all. A pooler present on one side only
    raises ``ValueError``. Old TF-style ``LayerNorm.gamma``/``beta`` names are accepted.
    """
    sd = _rename_gamma_beta(strip_prefix(sd, ("bert.",)))
    src = KeyTracker(sd, "HF BERT state dict", ignore=ignore)
    for key in _HF_BUFFERS:
        if key in src:
            src.skip(key)
    out = {ours: src.pop(theirs) for theirs, ours in _EMBED_KEYS}
    out.update(_token_types_from_hf(src, cfg))
    if cfg.mask_token_id is None:
        word = out["word_embed.weight"]
        out["mask_token"] = word.new_zeros(1, 1, word.shape[1])
    for i in range(cfg.depth):
        out.update(_block_from_hf(src, i, cfg.cross_attention))
    out.update(_pooler_from_hf(src, cfg, ignore))
    src.finish()
    return out


def _token_types_from_hf(src: KeyTracker, cfg: TextConfig) -> dict:
    key = "embeddings.token_type_embeddings.weight"
    if cfg.type_vocab_size > 0:
        return {"type_embed.weight": src.pop(key)}
    if key in src:
        table = src.pop(key)
        if table.shape[0] != 1 or table.count_nonzero():
            raise ValueError(
                f"{key} of shape {tuple(table.shape)} is not a single zero row, but cfg.type_vocab_size is 0; "
                f"convert with type_vocab_size={table.shape[0]}"
            )
    return {}


def _block_from_hf(src: KeyTracker, i: int, cross: bool = False) -> dict:
    hf, ours = f"encoder.layer.{i}.", f"blocks.{i}."
    qkv = [f"{hf}attention.self.{name}" for name in ("query", "key", "value")]
    out = {
        f"{ours}attn.qkv.weight": torch.cat([src.pop(f"{k}.weight") for k in qkv]),  # (3C, C): q, k, v
        f"{ours}attn.qkv.bias": torch.cat([src.pop(f"{k}.bias") for k in qkv]),
    }
    pairs = _BLOCK_KEYS + (_CROSS_KEYS if cross else ())
    for theirs, mine in pairs:
        for p in ("weight", "bias"):
            out[f"{ours}{mine}.{p}"] = src.pop(f"{hf}{theirs}.{p}")
    if cross:
        for p in ("weight", "bias"):
            out[f"{ours}cross_attn.q.{p}"] = src.pop(f"{hf}crossattention.self.query.{p}")
            kv = [src.pop(f"{hf}crossattention.self.{name}.{p}") for name in ("key", "value")]
            out[f"{ours}cross_attn.kv.{p}"] = torch.cat(kv)  # (2C, ...): k, v
    return out


def _pooler_from_hf(src: KeyTracker, cfg: TextConfig, ignore: tuple[str, ...]) -> dict:
    has = "pooler.dense.weight" in src
    if cfg.pooler and not has:
        raise ValueError("HF BERT state dict has no pooler (pooler.dense.*) but cfg.pooler is True; use pooler=False")
    if not cfg.pooler and has and not "pooler.dense.weight".startswith(tuple(ignore)):
        raise ValueError(
            "HF BERT state dict has a pooler (pooler.dense.*) but cfg.pooler is False; "
            "use pooler=True, or add 'pooler.' to ignore to drop it"
        )
    if not cfg.pooler:
        return {}
    return {f"pooler.dense.{p}": src.pop(f"pooler.dense.{p}") for p in ("weight", "bias")}


def _rename_gamma_beta(sd: dict) -> dict:
    def rename(k: str) -> str:
        if k.endswith("LayerNorm.gamma"):
            return k[: -len("gamma")] + "weight"
        if k.endswith("LayerNorm.beta"):
            return k[: -len("beta")] + "bias"
        return k

    return {rename(k): v for k, v in sd.items()}


def _check_bert_layout(cfg: TextConfig) -> None:
    if cfg.pre_norm:
        raise ValueError(
            "this text backbone has the pre-norm (GPT-2 / CLIP) layout, which HF BERT cannot hold; "
            "export it as the text tower of a CLIP model (convergent.converters.hf_clip)"
        )


def state_dict_to_hf(sd: dict, cfg: TextConfig, legacy: bool = False) -> dict:
    """Our state dict → HF ``BertModel`` keys, loadable with ``load_state_dict(strict=True)``
    into ``BertModel(BertConfig(**config_to_hf(cfg)), add_pooling_layer=cfg.pooler)``.
    The learned ``mask_token`` (if any) has no HF counterpart and is dropped. ``legacy`` is
    accepted for a uniform interface: BERT's 4.x and 5.x key names are the same."""
    _check_bert_layout(cfg)
    src = KeyTracker(sd, "convergent TextTransformer state dict", ignore=("mask_token",))
    out = {theirs: src.pop(ours) for theirs, ours in _EMBED_KEYS}
    word = out["embeddings.word_embeddings.weight"]
    if cfg.type_vocab_size > 0:
        out["embeddings.token_type_embeddings.weight"] = src.pop("type_embed.weight")
    else:  # HF always has a token-type row; a zero one adds nothing
        out["embeddings.token_type_embeddings.weight"] = word.new_zeros(1, word.shape[1])
    for i in range(cfg.depth):
        hf, ours = f"encoder.layer.{i}.", f"blocks.{i}."
        for p in ("weight", "bias"):
            q, k, v = src.pop(f"{ours}attn.qkv.{p}").chunk(3, dim=0)  # (3C, ...) → 3 × (C, ...)
            for name, t in zip(("query", "key", "value"), (q, k, v)):
                out[f"{hf}attention.self.{name}.{p}"] = t.clone()
            for theirs, mine in _BLOCK_KEYS + (_CROSS_KEYS if cfg.cross_attention else ()):
                out[f"{hf}{theirs}.{p}"] = src.pop(f"{ours}{mine}.{p}")
            if cfg.cross_attention:
                out[f"{hf}crossattention.self.query.{p}"] = src.pop(f"{ours}cross_attn.q.{p}")
                k, v = src.pop(f"{ours}cross_attn.kv.{p}").chunk(2, dim=0)
                out[f"{hf}crossattention.self.key.{p}"], out[f"{hf}crossattention.self.value.{p}"] = k.clone(), v.clone()
    if cfg.pooler:
        for p in ("weight", "bias"):
            out[f"pooler.dense.{p}"] = src.pop(f"pooler.dense.{p}")
    src.finish()
    return out


# --- LM head (cls.predictions) ----------------------------------------------------------------

_LM_HEAD = "cls.predictions."
_LM_HEAD_KEYS = (
    ("transform.dense.weight", "dense.weight"),
    ("transform.dense.bias", "dense.bias"),
    ("transform.LayerNorm.weight", "norm.weight"),
    ("transform.LayerNorm.bias", "norm.bias"),
    ("bias", "bias"),
)


def lm_head_from_hf(sd: dict) -> dict:
    """HF ``BertForMaskedLM`` / ``BertForPreTraining`` / ``BertLMHeadModel`` state dict → the
    state dict of :class:`~convergent.heads.lm_head.LMHead` (keys ``dense.*``, ``norm.*``,
    ``bias``). Keys outside ``cls.predictions.`` are ignored (convert the encoder with
    :func:`state_dict_from_hf`). The decoder is tied to the word embeddings in our head; a
    checkpoint whose ``decoder.weight`` differs from them (untied) raises ``ValueError``."""
    sd = _rename_gamma_beta(sd)
    src = KeyTracker({k[len(_LM_HEAD) :]: v for k, v in sd.items() if k.startswith(_LM_HEAD)}, "HF BERT LM head")
    out = {ours: src.pop(theirs) for theirs, ours in _LM_HEAD_KEYS}
    word = strip_prefix(sd, ("bert.",)).get("embeddings.word_embeddings.weight")
    decoder = src.get("decoder.weight")
    if decoder is not None and word is not None and not torch.equal(decoder, word):
        raise ValueError(
            "HF BERT LM head: cls.predictions.decoder.weight differs from the word embeddings (an untied "
            "decoder); convergent's LM head is tied to the input embedding"
        )
    bias = src.get("decoder.bias")
    if bias is not None and not torch.equal(bias, out["bias"]):
        raise ValueError("HF BERT LM head: cls.predictions.decoder.bias differs from cls.predictions.bias")
    src.finish()
    return out


def lm_head_to_hf(head_sd: dict, word_embeddings: torch.Tensor) -> dict:
    """:class:`~convergent.heads.lm_head.LMHead` state dict (+ the tied word embeddings
    ``(V, C)``) → HF ``cls.predictions.*`` keys, the tied ``decoder`` weight and bias
    included; with ``bert.``-prefixed :func:`state_dict_to_hf` keys (and no pooler) it loads
    strictly into ``BertForMaskedLM`` / ``BertLMHeadModel``."""
    src = KeyTracker(head_sd, "convergent LM head state dict")
    out = {f"{_LM_HEAD}{theirs}": src.pop(ours) for theirs, ours in _LM_HEAD_KEYS}
    src.finish()
    out[f"{_LM_HEAD}decoder.weight"] = word_embeddings
    out[f"{_LM_HEAD}decoder.bias"] = out[f"{_LM_HEAD}bias"]
    return out
