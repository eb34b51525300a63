"""HF ``transformers`` CLIP ⇄ convergent's ``clip`` task: configs and state dicts.

Pure functions; ``transformers`` is never imported, and torch only inside the state-dict
functions. A HF ``CLIPModel`` is two towers plus three tensors; ours is the ``clip`` task
(``convergent.tasks.clip.CLIP``) around a ViT with ``pre_norm=True`` (image tower,
``backbone.``) and a text Transformer with ``pre_norm=True, causal=True`` (``text_backbone.``):

=============================================================  ================================
``logit_scale``                                                ``logit_scale``
``visual_projection.weight``                                   ``image_proj.weight``
``text_projection.weight``                                     ``text_proj.weight``
``vision_model.embeddings.class_embedding`` ``(C,)``           ``backbone.cls_token`` ``(1, 1, C)``
``vision_model.embeddings.patch_embedding.weight``             ``backbone.patch_embed.proj.weight``
``vision_model.embeddings.position_embedding.weight``          ``backbone.pos_embed`` ``(1, 1+N, C)``
``vision_model.pre_layrnorm``                                  ``backbone.norm_pre``
``vision_model.post_layernorm``                                ``backbone.norm``
``text_model.embeddings.token_embedding.weight``               ``text_backbone.word_embed.weight``
``text_model.embeddings.position_embedding.weight``            ``text_backbone.pos_embed.weight``
``text_model.final_layer_norm``                                ``text_backbone.norm``
``{vision,text}_model.encoder.layers.i.layer_norm1``           ``blocks.i.norm1``
``….self_attn.{q,k,v}_proj``                                   ``blocks.i.attn.qkv`` (q, k, v stacked)
``….self_attn.out_proj``                                       ``blocks.i.attn.proj``
``….layer_norm2`` / ``….mlp.fc1`` / ``….mlp.fc2``              ``blocks.i.norm2`` / ``mlp.fc1`` / ``mlp.fc2``
=============================================================  ================================

HF's ``post_layernorm`` normalises only the pooled class token, our final norm every token:
LayerNorm acts per token, so the class token — what CLIP uses — is the same. Both mask
tokens (``backbone.mask_token``, ``text_backbone.mask_token``) have no HF counterpart: they
are zeros after import and dropped on export. The key names are the same in transformers 4.x
and 5.x; old checkpoints' ``position_ids`` buffers are skipped.

The forward matches HF's with the task's default pooling (``image_pooling='default'`` on a
ViT with ``global_pool='cls'``, ``text_pooling='eos'``) whenever each text ends with the
end-of-text token followed only by padding, as CLIP's tokenizer writes it: HF takes the first
``eos_token_id`` (or, for configs with the pre-2023 ``eos_token_id=2``, the highest id), the
task the last real token. HF CLIP has no hidden dropout, dropout / drop path are not exported.
"""

from dataclasses import dataclass

from convergent.backbones.configs import config_to_dict
from convergent.backbones.text_spec import TextConfig
from convergent.backbones.vit_spec import ViTConfig
from convergent.converters.common import ACT_FROM_HF, ACT_TO_HF, KeyTracker, square_size, strip_prefix
from convergent.converters.hf_vit import beit_options

# HF's activation names plus OpenAI CLIP's own
_ACT_FROM_HF = {**ACT_FROM_HF, "quick_gelu": "quick_gelu"}
_ACT_TO_HF = {**ACT_TO_HF, "quick_gelu": "quick_gelu"}

# transformers.CLIP{Text,Vision}Config defaults (openai/clip-vit-base-patch32), for keys a dict leaves out
_TEXT_DEFAULTS = dict(
    vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
    max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, attention_dropout=0.0,
    pad_token_id=1, bos_token_id=49406, eos_token_id=49407,
)  # fmt: skip
_VISION_DEFAULTS = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, num_channels=3,
    image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5, attention_dropout=0.0,
)  # fmt: skip
_CLIP_DEFAULTS = dict(projection_dim=512, logit_scale_init_value=2.6592)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
"""OpenAI CLIP's image normalisation mean (``CLIPImageProcessor``'s default)."""
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
"""OpenAI CLIP's image normalisation std."""


def _affine(ours: str, theirs: str) -> tuple[tuple[str, str], ...]:
    """(our name, HF name) of a layer's weight and bias."""
    return tuple((f"{ours}.{t}", f"{theirs}.{t}") for t in ("weight", "bias"))


# (our name, HF name): the tensors outside the towers, then those outside the blocks per tower
# (without the tower prefixes)
_TOP_KEYS = (
    ("logit_scale", "logit_scale"),
    ("image_proj.weight", "visual_projection.weight"),
    ("text_proj.weight", "text_projection.weight"),
)
_VISION_KEYS = (
    ("cls_token", "embeddings.class_embedding"),  # (1, 1, C) ↔ (C,)
    ("pos_embed", "embeddings.position_embedding.weight"),  # (1, 1 + N, C) ↔ (1 + N, C)
    ("patch_embed.proj.weight", "embeddings.patch_embedding.weight"),
    *_affine("norm_pre", "pre_layrnorm"),
    *_affine("norm", "post_layernorm"),
)
_TEXT_KEYS = (
    ("word_embed.weight", "embeddings.token_embedding.weight"),
    ("pos_embed.weight", "embeddings.position_embedding.weight"),
    *_affine("norm", "final_layer_norm"),
)
# our tensors whose HF counterpart has no leading batch dimension
_TO_OURS = {"cls_token": lambda t: t.reshape(1, 1, -1), "pos_embed": lambda t: t.unsqueeze(0)}
_TO_HF = {"cls_token": lambda t: t.reshape(-1), "pos_embed": lambda t: t.squeeze(0)}
# (our name in blocks.i, HF name in encoder.layers.i) for the tensors other than q/k/v
_BLOCK_KEYS = (
    ("norm1", "layer_norm1"),
    ("attn.proj", "self_attn.out_proj"),
    ("norm2", "layer_norm2"),
    ("mlp.fc1", "mlp.fc1"),
    ("mlp.fc2", "mlp.fc2"),
)
_QKV = ("q_proj", "k_proj", "v_proj")
_BUFFERS = ("vision_model.embeddings.position_ids", "text_model.embeddings.position_ids")

@dataclass(frozen=True)
class CLIPTowers:
    """A HF ``CLIPModel`` config in convergent's terms."""

    vision: ViTConfig
    """The image tower (``pre_norm=True``)."""
    text: TextConfig
    """The text tower (``pre_norm=True``, ``causal=True``)."""
    embed_dim: int
    """Width of the joint space (HF ``projection_dim``)."""
    logit_scale_init: float = 2.6592
    """HF ``logit_scale_init_value`` (log(1/0.07)); the converted ``logit_scale`` tensor is what counts."""
    bos_token_id: int | None = None
    """The tokenizer's start-of-text id, kept for export (None: ``vocab_size - 2``, CLIP's BPE)."""
    eos_token_id: int | list[int] | None = None
    """The end-of-text id HF pools at, kept for export (None: ``vocab_size - 1``, CLIP's BPE)."""


def config_from_hf(hf: dict) -> CLIPTowers:
    """:class:`CLIPTowers` from a ``transformers.CLIPConfig.to_dict()``-style dict (a ``config.json``)."""
    if hf.get("model_type", "clip") != "clip":
        raise ValueError(f"HF config has model_type {hf['model_type']!r}; this converter reads 'clip' only")
    top = {**_CLIP_DEFAULTS, **hf}
    t = {**_TEXT_DEFAULTS, **(hf.get("text_config") or {})}
    v = {**_VISION_DEFAULTS, **(hf.get("vision_config") or {})}
    for where, c in (("text_config", t), ("vision_config", v)):
        _check_tower(c, where)
    pad = t["pad_token_id"]
    vision = _vision_config(v, "vision_config.")
    text = TextConfig(
        vocab_size=t["vocab_size"], max_position=t["max_position_embeddings"], type_vocab_size=0,
        embed_dim=t["hidden_size"], depth=t["num_hidden_layers"], num_heads=t["num_attention_heads"],
        mlp_dim=t["intermediate_size"], dropout=0.0, attn_dropout=float(t["attention_dropout"]),
        norm_eps=float(t["layer_norm_eps"]), act=_ACT_FROM_HF[t["hidden_act"]],
        pad_token_id=pad if pad is not None and 0 <= pad < t["vocab_size"] else 0,  # only marks padding
        mask_token_id=None, causal=True, pooler=False, pre_norm=True,
    )  # fmt: skip
    return CLIPTowers(
        vision, text, int(top["projection_dim"]), float(top["logit_scale_init_value"]),
        t["bos_token_id"], t["eos_token_id"],
    )  # fmt: skip


IMAGE_TOWER_TYPES = ("clip", "clip_vision_model")
"""HF model types whose image tower :func:`vision_config_from_hf` reads: a whole ``CLIPModel`` or
a ``CLIPVisionModel``."""


def vision_config_from_hf(hf: dict) -> ViTConfig:
    """The image tower's :class:`ViTConfig` from the config dict of a ``CLIPModel`` (its
    ``vision_config``) or of a ``CLIPVisionModel`` (``model_type: clip_vision_model``, flat)."""
    kind = hf.get("model_type", "clip")
    if kind not in IMAGE_TOWER_TYPES:
        raise ValueError(f"HF config has model_type {kind!r}; expected one of {IMAGE_TOWER_TYPES}")
    v = {**_VISION_DEFAULTS, **(hf.get("vision_config") or {} if kind == "clip" else hf)}
    _check_tower(v, "vision_config" if kind == "clip" else "vision model config")
    return _vision_config(v, "vision_config." if kind == "clip" else "")


def _check_tower(c: dict, where: str) -> None:
    """A tower's config dict (defaults filled in) uses an activation we have and splits into heads."""
    if c["hidden_act"] not in _ACT_FROM_HF:
        raise ValueError(f"HF CLIP {where}: hidden_act {c['hidden_act']!r} unsupported; expected one of {sorted(_ACT_FROM_HF)}")
    if c["hidden_size"] % c["num_attention_heads"]:
        raise ValueError(f"HF CLIP {where}: hidden_size {c['hidden_size']} is not divisible by num_attention_heads")


def _vision_config(v: dict, where: str) -> ViTConfig:
    """The image tower of a vision config dict (defaults filled in, checked)."""
    return ViTConfig(
        img_size=square_size(v["image_size"], f"{where}image_size"),
        patch_size=square_size(v["patch_size"], f"{where}patch_size"),
        in_chans=v["num_channels"], embed_dim=v["hidden_size"], depth=v["num_hidden_layers"],
        num_heads=v["num_attention_heads"], mlp_dim=v["intermediate_size"], qkv_bias=True, dropout=0.0,
        attn_dropout=float(v["attention_dropout"]), norm_eps=float(v["layer_norm_eps"]),
        act=_ACT_FROM_HF[v["hidden_act"]], pooler=False, global_pool="cls", pre_norm=True,
    )  # fmt: skip


def config_to_hf(towers: CLIPTowers) -> dict:
    """A dict such that ``transformers.CLIPConfig(**d)`` builds the equivalent ``CLIPModel``."""
    _check_towers(towers)
    v, t = towers.vision, towers.text
    return {
        "model_type": "clip",
        "architectures": ["CLIPModel"],
        "projection_dim": towers.embed_dim,
        "logit_scale_init_value": towers.logit_scale_init,
        "text_config": {
            "vocab_size": t.vocab_size, "hidden_size": t.embed_dim, "intermediate_size": t.mlp_dim,
            "projection_dim": towers.embed_dim, "num_hidden_layers": t.depth, "num_attention_heads": t.num_heads,
            "max_position_embeddings": t.max_position, "hidden_act": _ACT_TO_HF[t.act],
            "layer_norm_eps": t.norm_eps, "attention_dropout": t.attn_dropout, "pad_token_id": t.pad_token_id,
            "bos_token_id": t.vocab_size - 2 if towers.bos_token_id is None else towers.bos_token_id,
            "eos_token_id": t.vocab_size - 1 if towers.eos_token_id is None else towers.eos_token_id,
        },
        "vision_config": {
            "hidden_size": v.embed_dim, "intermediate_size": v.mlp_dim, "projection_dim": towers.embed_dim,
            "num_hidden_layers": v.depth, "num_attention_heads": v.num_heads, "num_channels": v.in_chans,
            "image_size": v.img_size, "patch_size": v.patch_size, "hidden_act": _ACT_TO_HF[v.act],
            "layer_norm_eps": v.norm_eps, "attention_dropout": v.attn_dropout,
        },
    }  # fmt: skip


def _check_towers(towers: CLIPTowers) -> None:
    v, t = towers.vision, towers.text
    problems = []
    if not v.pre_norm or not v.qkv_bias or v.pooler or beit_options(v):
        problems.append("the image tower must be a ViT with pre_norm=True, qkv_bias=True, no pooler and none of "
                        "BEiT's options (pos_embed 'none', rel_pos_bias, layer_scale)")  # fmt: skip
    if not (t.pre_norm and t.causal) or t.type_vocab_size or t.pooler:
        problems.append("the text tower must have pre_norm=True, causal=True, type_vocab_size=0 and no pooler")
    if problems:
        raise ValueError("not a HF CLIP layout: " + "; ".join(problems))


def task_config_fields(towers: CLIPTowers) -> dict:
    """Fields of the ``clip`` task's ``CLIPConfig`` that rebuild these towers' heads and text
    tower: ``CLIP(VisionTransformer(towers.vision), CLIPConfig(**task_config_fields(towers)))``."""
    text = {k: v for k, v in config_to_dict(towers.text).items() if k != "family"}
    return {
        "text_backbone": "clip_text_base", "text_overrides": text, "embed_dim": towers.embed_dim,
        "image_pooling": "default", "text_pooling": "eos",
    }  # fmt: skip


# --- state dicts --------------------------------------------------------------------------------


def state_dict_from_hf(sd: dict, towers: CLIPTowers) -> dict:
    """HF ``CLIPModel`` state dict → the ``clip`` task's (``backbone.*``, ``text_backbone.*``,
    ``image_proj.weight``, ``text_proj.weight``, ``logit_scale``). Keys not understood raise one
    ``KeyError`` listing them all."""
    src = KeyTracker(strip_prefix(sd, ("clip.",)), "HF CLIP state dict")
    for key in _BUFFERS:
        if key in src:
            src.skip(key)
    out = {ours: src.pop(theirs) for ours, theirs in _TOP_KEYS}
    out.update({f"backbone.{k}": t for k, t in _vision_from_hf(src, towers.vision, "vision_model.").items()})
    text = _tower_from_hf(src, _TEXT_KEYS, towers.text.depth, "text_model.")
    if towers.text.mask_token_id is None:
        text["mask_token"] = text["word_embed.weight"].new_zeros(1, 1, towers.text.embed_dim)
    out.update({f"text_backbone.{k}": t for k, t in text.items()})
    src.finish()
    return out


def vision_state_dict_from_hf(sd: dict, cfg: ViTConfig, prefix: str | None = "vision_model.") -> dict:
    """The image tower alone (a ``CLIPModel`` or, with ``prefix=""``, a ``CLIPVisionModel``
    without its own prefix, as transformers 5.x saves it; ``prefix=None``: whichever the keys
    show) → a ``VisionTransformer`` state dict; other keys are ignored."""
    if prefix is None:
        prefix = "vision_model." if any(k.startswith("vision_model.") for k in sd) else ""
    src = KeyTracker(sd, "HF CLIP vision state dict")
    return _vision_from_hf(src, cfg, prefix)


def _vision_from_hf(src: KeyTracker, cfg: ViTConfig, p: str) -> dict:
    out = _tower_from_hf(src, _VISION_KEYS, cfg.depth, p)
    out["mask_token"] = out["cls_token"].new_zeros(1, 1, cfg.embed_dim)
    return out


def _tower_keys(keys: tuple, depth: int) -> list[tuple[str, str]]:
    """(our name, HF name) of every tensor of a tower but q/k/v: ``keys`` plus the blocks'."""
    blocks = (
        pair
        for i in range(depth)
        for mine, theirs in _BLOCK_KEYS
        for pair in _affine(f"blocks.{i}.{mine}", f"encoder.layers.{i}.{theirs}")
    )
    return [*keys, *blocks]


def _qkv_keys(depth: int) -> list[tuple[str, list[str]]]:
    """(our fused ``qkv`` name, HF q, k, v names) of every block."""
    return [
        (f"blocks.{i}.attn.qkv.{t}", [f"encoder.layers.{i}.self_attn.{n}.{t}" for n in _QKV])
        for i in range(depth) for t in ("weight", "bias")
    ]  # fmt: skip


def _tower_from_hf(src: KeyTracker, keys: tuple, depth: int, p: str) -> dict:
    """One tower's tensors under HF prefix ``p`` → our names (without our tower prefix)."""
    import torch

    out = {}
    for ours, theirs in _tower_keys(keys, depth):
        t = src.pop(p + theirs)
        out[ours] = _TO_OURS[ours](t) if ours in _TO_OURS else t
    for ours, qkv in _qkv_keys(depth):
        out[ours] = torch.cat([src.pop(p + k) for k in qkv])  # (3C, ...): q, k, v stacked
    return out


def _tower_to_hf(src: KeyTracker, keys: tuple, depth: int, ours_prefix: str, p: str) -> dict:
    """The inverse of :func:`_tower_from_hf` for the tower under our prefix ``ours_prefix``."""
    out = {}
    for ours, theirs in _tower_keys(keys, depth):
        t = src.pop(ours_prefix + ours)
        out[p + theirs] = _TO_HF[ours](t) if ours in _TO_HF else t
    for ours, qkv in _qkv_keys(depth):
        for k, part in zip(qkv, src.pop(ours_prefix + ours).chunk(3, dim=0)):  # (3C, ...) → 3 × (C, ...)
            out[p + k] = part.clone()
    return out


def state_dict_to_hf(sd: dict, towers: CLIPTowers) -> dict:
    """The ``clip`` task's state dict → HF ``CLIPModel`` keys, loadable with ``strict=True``
    into ``CLIPModel(CLIPConfig(**config_to_hf(towers)))``; the mask tokens are dropped."""
    _check_towers(towers)
    src = KeyTracker(sd, "convergent CLIP task state dict", ignore=("backbone.mask_token", "text_backbone.mask_token"))
    out = {theirs: src.pop(ours) for ours, theirs in _TOP_KEYS}
    out.update(_tower_to_hf(src, _VISION_KEYS, towers.vision.depth, "backbone.", "vision_model."))
    out.update(_tower_to_hf(src, _TEXT_KEYS, towers.text.depth, "text_backbone.", "text_model."))
    src.finish()
    return out
