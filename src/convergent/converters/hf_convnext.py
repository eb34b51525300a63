"""HF transformers ``ConvNextModel`` ↔ convergent ``ConvNeXt``: configs and state dicts.

Pure functions; ``transformers`` is never imported. transformers 4.x and 5.x share one key
layout for ConvNeXt (no renames in ``conversion_mapping.py``), so ``legacy`` changes nothing:

* ``embeddings.patch_embeddings`` / ``embeddings.layernorm`` ↔ ``patch_embed.proj`` / ``.norm``;
* ``encoder.stages.I.downsampling_layer.{0,1}`` ↔ ``stages.I.downsample.{norm,conv}``;
* ``encoder.stages.I.layers.J.{dwconv,layernorm,pwconv1,pwconv2,layer_scale_parameter}`` ↔
  ``stages.I.blocks.J.{dwconv,norm,mlp.fc1,mlp.fc2,gamma}``;
* ``layernorm`` (after pooling) ↔ ``norm``.

HF hard-codes the LayerNorm epsilon of the stem, blocks and downsampling layers to 1e-6; its
``layer_norm_eps`` is only the pooled norm's (our ``head_norm_eps``). HF has no mask token:
ours is left out on export and starts at zero on import.

Importing this module does not import torch (the config functions serve the CLI).
"""

from convergent.backbones.convnext_spec import ConvNeXtConfig
from convergent.converters.common import ACT_FROM_HF, ACT_TO_HF, KeyTracker, square_size, strip_prefix

HF_MODEL_TYPES = ("convnext",)
"""``model_type`` values of the HF configs this converter reads."""
HEAD_PREFIXES = ("classifier.",)
"""Task-head keys (``ConvNextForImageClassification``) skipped."""
HF_BLOCK_EPS = 1e-6
"""The epsilon ``modeling_convnext.py`` hard-codes for every LayerNorm but the pooled one."""

# transformers.ConvNextConfig defaults, for keys a config dict leaves out
_HF_DEFAULTS = dict(
    num_channels=3,
    patch_size=4,
    hidden_sizes=(96, 192, 384, 768),
    depths=(3, 3, 9, 3),
    hidden_act="gelu",
    layer_norm_eps=1e-12,
    layer_scale_init_value=1e-6,
    drop_path_rate=0.0,
    image_size=224,
)


def config_from_checkpoint(hf: dict, state_dict: dict) -> ConvNeXtConfig:
    """Our config for a HF checkpoint (its config dict says everything)."""
    return config_from_hf(hf)


def config_from_hf(hf: dict) -> ConvNeXtConfig:
    """``ConvNeXtConfig`` from a ``transformers.ConvNextConfig.to_dict()``-style dict."""
    if hf.get("model_type", "convnext") != "convnext":
        raise ValueError(f"HF config has model_type {hf['model_type']!r}; this converter reads 'convnext' only")
    h = {**_HF_DEFAULTS, **hf}
    if h["hidden_act"] not in ACT_FROM_HF:
        raise ValueError(
            f"HF ConvNeXt config: hidden_act {h['hidden_act']!r} unsupported; expected one of {sorted(ACT_FROM_HF)}"
        )
    depths, dims = tuple(h["depths"]), tuple(h["hidden_sizes"])
    if h.get("num_stages", len(depths)) != len(depths):
        raise ValueError(f"HF ConvNeXt config: num_stages {h['num_stages']} but {len(depths)} depths {list(depths)}")
    return ConvNeXtConfig(
        img_size=square_size(h["image_size"], "image_size"),
        in_chans=h["num_channels"],
        patch_size=square_size(h["patch_size"], "patch_size"),
        depths=depths,
        dims=dims,
        drop_path=float(h["drop_path_rate"]),
        layer_scale_init=float(h["layer_scale_init_value"]),
        norm_eps=HF_BLOCK_EPS,
        head_norm_eps=float(h["layer_norm_eps"]),
        act=ACT_FROM_HF[h["hidden_act"]],
    )


def config_to_hf(cfg: ConvNeXtConfig) -> dict:
    """Dict such that ``transformers.ConvNextConfig(**d)`` builds the equivalent model (with
    ``model_type``). ``dropout`` (a training-time regulariser HF ConvNeXt lacks) is not represented."""
    if cfg.norm_eps != HF_BLOCK_EPS:
        raise ValueError(f"HF ConvNeXt hard-codes LayerNorm eps {HF_BLOCK_EPS} in its blocks; norm_eps={cfg.norm_eps}")
    if cfg.act not in ACT_TO_HF:
        raise ValueError(f"activation {cfg.act!r} has no HF ConvNeXt equivalent")
    return {
        "model_type": "convnext",
        "architectures": ["ConvNextModel"],
        "image_size": cfg.img_size,
        "num_channels": cfg.in_chans,
        "patch_size": cfg.patch_size,
        "num_stages": len(cfg.depths),
        "depths": list(cfg.depths),
        "hidden_sizes": list(cfg.dims),
        "hidden_act": ACT_TO_HF[cfg.act],
        "layer_norm_eps": cfg.head_norm_eps,
        "layer_scale_init_value": cfg.layer_scale_init,
        "drop_path_rate": cfg.drop_path,
    }


def _names(cfg: ConvNeXtConfig) -> dict[str, str]:
    """Our tensor name → the HF tensor name, for every tensor both models hold."""
    names = {
        "patch_embed.proj": "embeddings.patch_embeddings",
        "patch_embed.norm": "embeddings.layernorm",
        "norm": "layernorm",
    }
    for i, depth in enumerate(cfg.depths):
        ours, hf = f"stages.{i}.", f"encoder.stages.{i}."
        if i > 0:
            names[ours + "downsample.norm"] = hf + "downsampling_layer.0"
            names[ours + "downsample.conv"] = hf + "downsampling_layer.1"
        for j in range(depth):
            for a, b in (("dwconv", "dwconv"), ("norm", "layernorm"), ("mlp.fc1", "pwconv1"), ("mlp.fc2", "pwconv2")):
                names[f"{ours}blocks.{j}.{a}"] = f"{hf}layers.{j}.{b}"
    out = {f"{a}.{t}": f"{b}.{t}" for a, b in names.items() for t in ("weight", "bias")}
    if cfg.layer_scale_init > 0:
        for i, depth in enumerate(cfg.depths):
            for j in range(depth):
                out[f"stages.{i}.blocks.{j}.gamma"] = f"encoder.stages.{i}.layers.{j}.layer_scale_parameter"
    return out


def state_dict_from_hf(sd: dict, cfg: ConvNeXtConfig, ignore=HEAD_PREFIXES) -> dict:
    """HF ConvNeXt state dict (``ConvNextModel``, or ``ConvNextForImageClassification`` with its
    ``convnext.`` prefix) → ours. Keys under ``ignore`` (task heads) are skipped; any other key
    left over raises one ``KeyError`` listing them all. The mask token starts at zero."""
    import torch

    sd = strip_prefix(sd, ("convnext.",))
    src = KeyTracker(sd, "HF ConvNeXt state dict", ignore=ignore)
    out = {ours: src.pop(hf) for ours, hf in _names(cfg).items()}
    out["mask_token"] = torch.zeros(1, 1, cfg.dims[0], dtype=out["patch_embed.proj.weight"].dtype)
    src.finish()
    return out


def state_dict_to_hf(sd: dict, cfg: ConvNeXtConfig, legacy: bool = False) -> dict:
    """Ours → HF ``ConvNextModel`` state dict, loadable with ``strict=True``. ``legacy`` is
    accepted for the common interface (4.x and 5.x name ConvNeXt's tensors alike); the mask
    token, which HF lacks, is left out."""
    src = KeyTracker(sd, "convergent ConvNeXt state dict")
    out = {hf: src.pop(ours) for ours, hf in _names(cfg).items()}
    src.skip("mask_token")
    src.finish()
    return out
