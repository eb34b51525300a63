"""HF ``transformers`` ViT ↔ convergent ``VisionTransformer``: configs and state dicts.

Pure functions; ``transformers`` is never imported. Two HF key layouts are read:

* transformers 5.x: ``layers.N.attention.q_proj``, ``layers.N.mlp.fc1``, ...
* 4.x (checkpoint files on the hub): ``encoder.layer.N.attention.attention.query``,
  ``encoder.layer.N.intermediate.dense``, ... (the renames of the ``"ViTModel"`` entry of
  ``transformers/conversion_mapping.py``).

HF keeps q, k, v as three linears; convergent fuses them into ``attn.qkv`` (q, k, v stacked
on the output dimension).

Importing this module does not import torch (the config functions serve the CLI); the
state-dict functions do.
"""

from convergent.backbones.vit_spec import ViTConfig
from convergent.converters.common import ACT_FROM_HF, ACT_TO_HF, KeyTracker, has_pooler, square_size, strip_prefix

# transformers.ViTConfig defaults, used for keys a config dict leaves out.
_HF_DEFAULTS = dict(
    image_size=224,
    patch_size=16,
    num_channels=3,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    hidden_act="gelu",
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    layer_norm_eps=1e-12,
    qkv_bias=True,
    pooler_act="tanh",
)


HF_MODEL_TYPES = ("vit",)
"""``model_type`` values of the HF configs this converter reads."""
HEAD_PREFIXES = ("classifier.", "decoder.")
"""Task-head keys (``ViTForImageClassification`` / ``ViTForMaskedImageModeling``) skipped."""


def config_from_checkpoint(hf: dict, state_dict: dict) -> ViTConfig:
    """Our config for a HF checkpoint: its config dict plus whether its weights hold a pooler."""
    return config_from_hf(hf, pooler=has_pooler(state_dict))


def config_from_hf(hf: dict, pooler: bool = False) -> ViTConfig:
    """``ViTConfig`` from a ``transformers.ViTConfig.to_dict()``-style dict.

    Args:
        hf: the HF config dict (``config.json`` of a ViT checkpoint).
        pooler: whether the model has HF's dense+tanh pooler; HF's config does not record
            it (``ViTModel(add_pooling_layer=...)``), so the caller says.
    """
    if hf.get("model_type", "vit") != "vit":
        raise ValueError(f"HF config has model_type {hf['model_type']!r}; this converter reads 'vit' only")
    h = {**_HF_DEFAULTS, **hf}
    if h["hidden_act"] not in ACT_FROM_HF:
        raise ValueError(f"HF ViT config: hidden_act {h['hidden_act']!r} unsupported; expected one of {sorted(ACT_FROM_HF)}")
    width, heads = h["hidden_size"], h["num_attention_heads"]
    if width % heads or h.get("head_dim") not in (None, width // heads):
        raise ValueError(f"HF ViT config: hidden_size {width} must equal num_attention_heads {heads} x head_dim")
    if pooler and (h["pooler_act"] != "tanh" or h.get("pooler_output_size", width) not in (None, width)):
        raise ValueError(
            f"HF ViT config: pooler must be tanh with pooler_output_size == hidden_size ({width}), "
            f"got {h['pooler_act']!r} and {h.get('pooler_output_size')}"
        )
    return ViTConfig(
        img_size=square_size(h["image_size"], "image_size"),
        patch_size=square_size(h["patch_size"], "patch_size"),
        in_chans=h["num_channels"],
        embed_dim=width,
        depth=h["num_hidden_layers"],
        num_heads=heads,
        mlp_dim=h["intermediate_size"],
        qkv_bias=bool(h["qkv_bias"]),
        dropout=h["hidden_dropout_prob"],
        attn_dropout=h["attention_probs_dropout_prob"],
        norm_eps=h["layer_norm_eps"],
        act=ACT_FROM_HF[h["hidden_act"]],
        pooler=pooler,
    )


def config_to_hf(cfg: ViTConfig) -> dict:
    """Dict such that ``transformers.ViTConfig(**d)`` builds the equivalent model.

    ``drop_path`` (a training-time regulariser HF ViT lacks) is not represented; build the HF
    model with ``add_pooling_layer=cfg.pooler``. Nor are the training choices ``pos_embed='sincos'``
    (the fixed table goes over as HF's position embeddings, same key, same values),
    ``freeze_patch_embed`` and ``init``.
    """
    if cfg.pooler and cfg.global_pool != "cls":
        raise ValueError(f"HF ViT's pooler reads the class token; global_pool={cfg.global_pool!r} has no HF equivalent")
    _check_vit_layout(cfg)
    return {
        "model_type": "vit",
        "image_size": cfg.img_size,
        "patch_size": cfg.patch_size,
        "num_channels": cfg.in_chans,
        "hidden_size": cfg.embed_dim,
        "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.mlp_dim,
        "hidden_act": ACT_TO_HF[cfg.act],
        "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.attn_dropout,
        "layer_norm_eps": cfg.norm_eps,
        "qkv_bias": cfg.qkv_bias,
        "pooler_output_size": cfg.embed_dim,
        "pooler_act": "tanh",
    }


def _layer_names(i: int, legacy: bool) -> dict[str, str]:
    """Our module path in block ``i`` → the HF module path (without ``.weight``/``.bias``)."""
    if legacy:
        p = f"encoder.layer.{i}."
        att, fc1, fc2 = p + "attention.attention.", p + "intermediate.dense", p + "output.dense"
        proj = p + "attention.output.dense"
    else:
        p = f"layers.{i}."
        att, fc1, fc2, proj = p + "attention.", p + "mlp.fc1", p + "mlp.fc2", p + "attention.o_proj"
    q, k, v = (att + n for n in (("query", "key", "value") if legacy else ("q_proj", "k_proj", "v_proj")))
    return {
        "norm1": p + "layernorm_before",
        "attn.q": q,
        "attn.k": k,
        "attn.v": v,
        "attn.proj": proj,
        "norm2": p + "layernorm_after",
        "mlp.fc1": fc1,
        "mlp.fc2": fc2,
    }


def _plain_names(cfg: ViTConfig) -> dict[str, str]:
    """Our tensor name → HF tensor name for everything outside the blocks."""
    names = {
        "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
        "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
        "cls_token": "embeddings.cls_token",
        "pos_embed": "embeddings.position_embeddings",
        "norm.weight": "layernorm.weight",
        "norm.bias": "layernorm.bias",
    }
    if cfg.pooler:
        names.update({"pooler.dense.weight": "pooler.dense.weight", "pooler.dense.bias": "pooler.dense.bias"})
    return names


def _block_names(i: int, legacy: bool) -> dict[str, str]:
    """Our tensor name → HF tensor name for the non-qkv tensors of block ``i``."""
    hf = _layer_names(i, legacy)
    out = {}
    for ours in ("norm1", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
        for t in ("weight", "bias"):
            out[f"blocks.{i}.{ours}.{t}"] = f"{hf[ours]}.{t}"
    return out


def state_dict_from_hf(sd: dict, cfg: ViTConfig, ignore=HEAD_PREFIXES) -> dict:
    """HF ViT state dict (``ViTModel``, or ``ViTFor*`` with its ``vit.`` prefix; 5.x or 4.x
    key layout) → convergent ``VisionTransformer`` state dict for ``cfg``.

    Keys under ``ignore`` (task heads) are skipped; a pooler is dropped when
    ``cfg.pooler`` is False; a missing ``embeddings.mask_token`` becomes zeros. Any other key
    left over raises one ``KeyError`` listing them all.
    """
    import torch

    sd = strip_prefix(sd, ("vit.",))
    legacy = any(k.startswith("encoder.layer.") for k in sd)
    src = KeyTracker(sd, "HF ViT state dict" + (" (4.x layout)" if legacy else ""), ignore=ignore)
    out = {ours: src.pop(hf) for ours, hf in _plain_names(cfg).items()}
    mask = src.get("embeddings.mask_token")
    out["mask_token"] = mask if mask is not None else torch.zeros_like(out["cls_token"])
    if not cfg.pooler:
        for key in ("pooler.dense.weight", "pooler.dense.bias"):
            src.skip(key)
    for i in range(cfg.depth):
        hf = _layer_names(i, legacy)
        out.update({ours: src.pop(name) for ours, name in _block_names(i, legacy).items()})
        qkv = ("attn.q", "attn.k", "attn.v")
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat([src.pop(hf[n] + ".weight") for n in qkv])  # (3C, C)
        if cfg.qkv_bias:
            out[f"blocks.{i}.attn.qkv.bias"] = torch.cat([src.pop(hf[n] + ".bias") for n in qkv])  # (3C,)
    src.finish()
    return out


def _check_vit_layout(cfg: ViTConfig) -> None:
    if cfg.pre_norm:
        raise ValueError(
            "this ViT has CLIP's pre_norm layout (LayerNorm before the blocks, no patch bias), which HF "
            "ViTModel cannot hold; export it as the vision tower of a CLIP model (convergent.converters.hf_clip)"
        )
    beit = beit_options(cfg)
    if beit:
        raise ValueError(f"this ViT has BEiT's {', '.join(beit)}, which HF ViTModel cannot hold (HF BeitModel can)")


def beit_options(cfg: ViTConfig) -> list[str]:
    """The BEiT options ``cfg`` uses (no absolute positions, shared relative position bias, layer
    scale), which a plain HF ViT / CLIP vision tower has no place for."""
    found = [f"pos_embed {cfg.pos_embed!r}"] if cfg.pos_embed == "none" else []
    found += [f"rel_pos_bias {cfg.rel_pos_bias!r}"] if cfg.rel_pos_bias != "none" else []
    return found + ([f"layer_scale {cfg.layer_scale}"] if cfg.layer_scale is not None else [])


def state_dict_to_hf(sd: dict, cfg: ViTConfig, legacy: bool = False, mask_token: bool = False) -> dict:
    """convergent ``VisionTransformer`` state dict → HF ``ViTModel`` state dict, loadable with
    ``strict=True`` into ``ViTModel(config, add_pooling_layer=cfg.pooler, use_mask_token=mask_token)``.

    ``legacy=True`` writes the transformers 4.x key names (``encoder.layer.N....``).
    """
    _check_vit_layout(cfg)
    src = KeyTracker(sd, "convergent ViT state dict")
    out = {hf: src.pop(ours) for ours, hf in _plain_names(cfg).items()}
    if mask_token:
        out["embeddings.mask_token"] = src.pop("mask_token")
    else:
        src.skip("mask_token")
    for i in range(cfg.depth):
        hf = _layer_names(i, legacy)
        out.update({name: src.pop(ours) for ours, name in _block_names(i, legacy).items()})
        qkv = ("attn.q", "attn.k", "attn.v")
        for n, w in zip(qkv, src.pop(f"blocks.{i}.attn.qkv.weight").chunk(3, dim=0)):
            out[hf[n] + ".weight"] = w.clone()
        if cfg.qkv_bias:
            for n, b in zip(qkv, src.pop(f"blocks.{i}.attn.qkv.bias").chunk(3, dim=0)):
                out[hf[n] + ".bias"] = b.clone()
    src.finish()
    return out
