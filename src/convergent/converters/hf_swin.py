"""HF transformers ``SwinModel`` / ``Swinv2Model`` ↔ convergent ``SwinTransformer``.

Pure functions over config dicts and state dicts. Reads both the transformers-5 key layout
(``attention.q_proj``, ``mlp.fc1``) and the 4.x layout of checkpoint files
(``attention.self.query``, ``intermediate.dense``); Swin V2 always uses the latter.
HF's separate q/k/v projections become one fused ``qkv``; Swin V2's key has no bias and its
q/v biases become ``q_bias``/``v_bias`` as in the official release.
"""

import torch

from convergent.backbones.swin_spec import SwinConfig
from convergent.converters.common import KeyTracker, square_size, strip_prefix

PREFIXES = ("swin.", "swinv2.", "model.")
HF_MODEL_TYPES = ("swin", "swinv2")
"""``model_type`` values of the HF configs this converter reads."""
HEAD_PREFIXES = ("decoder.", "classifier.")
"""Task-head keys (``Swin*ForMaskedImageModeling`` / ``ForImageClassification``) skipped."""


def config_from_checkpoint(hf: dict, state_dict: dict) -> SwinConfig:
    """Our config for a HF checkpoint (Swin's config dict says everything)."""
    return config_from_hf(hf)


def config_from_hf(hf: dict) -> SwinConfig:
    """Our config from a ``SwinConfig`` / ``Swinv2Config`` dict (``model_type`` swin or swinv2)."""
    kind = hf.get("model_type")
    if kind not in ("swin", "swinv2"):
        raise ValueError(f"expected model_type 'swin' or 'swinv2', got {kind!r}")
    act = hf.get("hidden_act", "gelu")
    if act not in ("gelu", "relu"):
        raise ValueError(f"hidden_act {act!r} is not supported (gelu or relu)")
    depths = tuple(hf["depths"])
    return SwinConfig(
        version=2 if kind == "swinv2" else 1,
        img_size=square_size(hf.get("image_size", 224), "image_size"),
        patch_size=square_size(hf.get("patch_size", 4), "patch_size"),
        in_chans=hf.get("num_channels", 3),
        embed_dim=hf["embed_dim"],
        depths=depths,
        num_heads=tuple(hf["num_heads"]),
        window_size=hf.get("window_size", 7),
        pretrained_window_sizes=tuple(hf.get("pretrained_window_sizes", (0,) * len(depths))),
        mlp_ratio=hf.get("mlp_ratio", 4.0),
        qkv_bias=hf.get("qkv_bias", True),
        dropout=hf.get("hidden_dropout_prob", 0.0),
        attn_dropout=hf.get("attention_probs_dropout_prob", 0.0),
        drop_path=hf.get("drop_path_rate", 0.1),
        ape=hf.get("use_absolute_embeddings", False),
        patch_norm=True,
        norm_eps=hf.get("layer_norm_eps", 1e-5),
        act=act,
    )


def config_to_hf(cfg: SwinConfig) -> dict:
    """``SwinConfig`` / ``Swinv2Config`` keyword dict (with ``model_type``)."""
    if not cfg.patch_norm:
        raise ValueError("HF Swin always normalises patch embeddings; patch_norm=False has no HF equivalent")
    if cfg.act not in ("gelu", "relu"):
        raise ValueError(f"activation {cfg.act!r} has no HF Swin equivalent")
    d = dict(
        model_type="swinv2" if cfg.version == 2 else "swin",
        architectures=["Swinv2Model" if cfg.version == 2 else "SwinModel"],
        image_size=cfg.img_size,
        patch_size=cfg.patch_size,
        num_channels=cfg.in_chans,
        embed_dim=cfg.embed_dim,
        depths=list(cfg.depths),
        num_heads=list(cfg.num_heads),
        window_size=cfg.window_size,
        mlp_ratio=cfg.mlp_ratio,
        qkv_bias=cfg.qkv_bias,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.attn_dropout,
        drop_path_rate=cfg.drop_path,
        hidden_act=cfg.act,
        use_absolute_embeddings=cfg.ape,
        layer_norm_eps=cfg.norm_eps,
    )
    if cfg.version == 2:
        d["pretrained_window_sizes"] = list(cfg.pretrained_window_sizes)
    return d


def _hf_block_names(cfg: SwinConfig, legacy: bool) -> dict:
    """Our block-relative names → HF block-relative names (for the chosen layout)."""
    if cfg.version == 2 or legacy:
        a = "attention.self."
        names = {"proj": "attention.output.dense", "fc1": "intermediate.dense", "fc2": "output.dense"}
        names.update(q=a + "query", k=a + "key", v=a + "value", table=a + "relative_position_bias_table")
        names.update(logit_scale=a + "logit_scale", cpb=a + "continuous_position_bias_mlp")
        names["buffers"] = (a + "relative_position_index", a + "relative_coords_table")
    else:
        names = {"proj": "attention.o_proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
        names.update(q="attention.q_proj", k="attention.k_proj", v="attention.v_proj")
        names.update(table="attention.relative_position_bias.relative_position_bias_table", buffers=())
    names.update(norm1="layernorm_before", norm2="layernorm_after")
    return names


def _is_legacy(sd: dict) -> bool:
    return any(".attention.self." in k for k in sd)


def state_dict_from_hf(sd: dict, cfg: SwinConfig, ignore=HEAD_PREFIXES) -> dict:
    """HF Swin/Swinv2 state dict (base model, or with a ``swin.``/``swinv2.`` prefix) → ours.
    Head keys under ``ignore`` are skipped; any other key not understood is an error.
    Without ``embeddings.mask_token`` our mask token is zero (HF's initial value)."""
    sd = strip_prefix(sd, PREFIXES)
    src = KeyTracker(sd, "HF Swin state dict", ignore)
    out = {
        "patch_embed.proj.weight": src.pop("embeddings.patch_embeddings.projection.weight"),
        "patch_embed.proj.bias": src.pop("embeddings.patch_embeddings.projection.bias"),
        "patch_embed.norm.weight": src.pop("embeddings.norm.weight"),
        "patch_embed.norm.bias": src.pop("embeddings.norm.bias"),
        "norm.weight": src.pop("layernorm.weight"),
        "norm.bias": src.pop("layernorm.bias"),
    }
    out["mask_token"] = src.get("embeddings.mask_token", torch.zeros(1, 1, cfg.embed_dim))
    if cfg.ape:
        out["absolute_pos_embed"] = src.pop("embeddings.position_embeddings")
    names = _hf_block_names(cfg, _is_legacy(sd))
    for i, depth in enumerate(cfg.depths):
        for j in range(depth):
            out.update(_block_from_hf(src, cfg, names, f"encoder.layers.{i}.blocks.{j}.", f"layers.{i}.blocks.{j}."))
        if i < len(cfg.depths) - 1:
            for t in ("reduction.weight", "norm.weight", "norm.bias"):
                out[f"layers.{i}.downsample.{t}"] = src.pop(f"encoder.layers.{i}.downsample.{t}")
    src.finish()
    return out


def _block_from_hf(src: KeyTracker, cfg: SwinConfig, n: dict, hf: str, ours: str) -> dict:
    out = {}
    for a, b in (("norm1", n["norm1"]), ("norm2", n["norm2"]), ("attn.proj", n["proj"])):
        for t in ("weight", "bias"):
            out[f"{ours}{a}.{t}"] = src.pop(f"{hf}{b}.{t}")
    for a, b in (("mlp.fc1", n["fc1"]), ("mlp.fc2", n["fc2"])):
        for t in ("weight", "bias"):
            out[f"{ours}{a}.{t}"] = src.pop(f"{hf}{b}.{t}")
    out[f"{ours}attn.qkv.weight"] = torch.cat([src.pop(f"{hf}{n[x]}.weight") for x in "qkv"])
    if cfg.qkv_bias and cfg.version == 1:
        out[f"{ours}attn.qkv.bias"] = torch.cat([src.pop(f"{hf}{n[x]}.bias") for x in "qkv"])
    elif cfg.qkv_bias:
        out[f"{ours}attn.q_bias"] = src.pop(f"{hf}{n['q']}.bias")
        out[f"{ours}attn.v_bias"] = src.pop(f"{hf}{n['v']}.bias")
    if cfg.version == 1:
        out[f"{ours}rel_pos.relative_position_bias_table"] = src.pop(f"{hf}{n['table']}")
    else:
        out[f"{ours}attn.logit_scale"] = src.pop(f"{hf}{n['logit_scale']}")
        for t in ("0.weight", "0.bias", "2.weight"):
            out[f"{ours}rel_pos.cpb_mlp.{t}"] = src.pop(f"{hf}{n['cpb']}.{t}")
    for b in n["buffers"]:
        src.skip(f"{hf}{b}")
    return out


def state_dict_to_hf(sd: dict, cfg: SwinConfig, legacy: bool = False, mask_token: bool = False) -> dict:
    """Ours → HF ``SwinModel``/``Swinv2Model`` keys (``legacy=True``: the 4.x Swin V1 layout).
    ``mask_token=True`` keeps ``embeddings.mask_token`` (models built with use_mask_token)."""
    out = {
        "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        "embeddings.norm.weight": sd["patch_embed.norm.weight"],
        "embeddings.norm.bias": sd["patch_embed.norm.bias"],
        "layernorm.weight": sd["norm.weight"],
        "layernorm.bias": sd["norm.bias"],
    }
    if mask_token:
        out["embeddings.mask_token"] = sd["mask_token"]
    if cfg.ape:
        out["embeddings.position_embeddings"] = sd["absolute_pos_embed"]
    n = _hf_block_names(cfg, legacy)
    for i, depth in enumerate(cfg.depths):
        for j in range(depth):
            out.update(_block_to_hf(sd, cfg, n, f"encoder.layers.{i}.blocks.{j}.", f"layers.{i}.blocks.{j}."))
        if i < len(cfg.depths) - 1:
            for t in ("reduction.weight", "norm.weight", "norm.bias"):
                out[f"encoder.layers.{i}.downsample.{t}"] = sd[f"layers.{i}.downsample.{t}"]
    return out


def _block_to_hf(sd: dict, cfg: SwinConfig, n: dict, hf: str, ours: str) -> dict:
    out = {}
    pairs = (("norm1", n["norm1"]), ("norm2", n["norm2"]), ("attn.proj", n["proj"]))
    pairs += (("mlp.fc1", n["fc1"]), ("mlp.fc2", n["fc2"]))
    for a, b in pairs:
        for t in ("weight", "bias"):
            out[f"{hf}{b}.{t}"] = sd[f"{ours}{a}.{t}"]
    for x, w in zip("qkv", sd[f"{ours}attn.qkv.weight"].chunk(3)):
        out[f"{hf}{n[x]}.weight"] = w
    if cfg.qkv_bias and cfg.version == 1:
        for x, b in zip("qkv", sd[f"{ours}attn.qkv.bias"].chunk(3)):
            out[f"{hf}{n[x]}.bias"] = b
    elif cfg.qkv_bias:
        out[f"{hf}{n['q']}.bias"] = sd[f"{ours}attn.q_bias"]
        out[f"{hf}{n['v']}.bias"] = sd[f"{ours}attn.v_bias"]
    if cfg.version == 1:
        out[f"{hf}{n['table']}"] = sd[f"{ours}rel_pos.relative_position_bias_table"]
    else:
        out[f"{hf}{n['logit_scale']}"] = sd[f"{ours}attn.logit_scale"]
        for t in ("0.weight", "0.bias", "2.weight"):
            out[f"{hf}{n['cpb']}.{t}"] = sd[f"{ours}rel_pos.cpb_mlp.{t}"]
    return out
