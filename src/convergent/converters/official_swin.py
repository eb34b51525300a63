"""Microsoft's official Swin / Swin V2 (and SimMIM) checkpoints → convergent.

The official modules use the same names as ours except the relative position bias, which we
keep in a ``rel_pos`` module beside the attention. Official checkpoints store no config, so
:func:`config_from_official` reads it off the tensors: widths, depths, heads, window size
(from the bias tables), version (V2 has ``cpb_mlp``), the V2 pre-training window size (from
the stored log-spaced coordinate table) and the image size (from a shifted block's
``attn_mask``; pass ``img_size`` when no block is shifted).
"""

import math
import re

import torch

from convergent.backbones.swin_spec import SwinConfig
from convergent.converters.common import strip_prefix

BUFFERS = ("attn.relative_position_index", "attn.relative_coords_table", "attn_mask")
HEAD_PREFIXES = ("head.", "decoder.")


def unwrap(checkpoint: dict) -> dict:
    """The state dict inside an official checkpoint (``{"model": sd, ...}``), prefix-free
    (SimMIM stores the encoder under ``encoder.``)."""
    sd = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    if not isinstance(sd, dict) or not sd:
        raise ValueError("checkpoint holds no state dict (expected a dict of tensors or {'model': ...})")
    return strip_prefix(sd, ("encoder.", "module."))


def config_from_official(checkpoint: dict, img_size: int | None = None) -> SwinConfig:
    """Infer the :class:`SwinConfig` of an official Swin/Swin V2 state dict."""
    sd = unwrap(checkpoint)
    if "patch_embed.proj.weight" not in sd:
        raise KeyError("not an official Swin state dict: 'patch_embed.proj.weight' is missing")
    proj = sd["patch_embed.proj.weight"]  # (C, in_chans, p, p)
    embed_dim, in_chans, patch = proj.shape[0], proj.shape[1], proj.shape[2]
    blocks = sorted({tuple(map(int, m.groups())) for k in sd if (m := re.match(r"layers\.(\d+)\.blocks\.(\d+)\.", k))})
    depths = tuple(max(j for i2, j in blocks if i2 == i) + 1 for i in range(max(i for i, _ in blocks) + 1))
    v2 = any(".cpb_mlp." in k for k in sd)
    heads, windows = [], []
    for i in range(len(depths)):
        p = f"layers.{i}.blocks.0.attn."
        if v2:
            heads.append(sd[p + "cpb_mlp.2.weight"].shape[0])
            windows.append(_v2_window(sd, p))
        else:
            table = sd[p + "relative_position_bias_table"]
            heads.append(table.shape[1])
            windows.append((math.isqrt(table.shape[0]) + 1) // 2)
    window = max(windows)
    return SwinConfig(
        version=2 if v2 else 1,
        img_size=img_size or _img_size(sd, depths, patch),
        patch_size=patch,
        in_chans=in_chans,
        embed_dim=embed_dim,
        depths=depths,
        num_heads=tuple(heads),
        window_size=window,
        pretrained_window_sizes=tuple(_pretrained_window(sd, i, w) for i, w in enumerate(windows)) if v2 else (),
        mlp_ratio=sd["layers.0.blocks.0.mlp.fc1.weight"].shape[0] / embed_dim,
        qkv_bias=("layers.0.blocks.0.attn.q_bias" if v2 else "layers.0.blocks.0.attn.qkv.bias") in sd,
        ape="absolute_pos_embed" in sd,
    )


def _v2_window(sd: dict, prefix: str) -> int:
    if prefix + "relative_coords_table" in sd:
        return (sd[prefix + "relative_coords_table"].shape[1] + 1) // 2  # (1, 2w-1, 2w-1, 2)
    if prefix + "relative_position_index" in sd:
        return math.isqrt(sd[prefix + "relative_position_index"].shape[0])  # (w*w, w*w)
    raise KeyError(f"{prefix}relative_coords_table: needed to read the window size of a Swin V2 checkpoint")


def _pretrained_window(sd: dict, stage: int, window: int) -> int:
    """Invert the log-spaced normalisation: the largest offset ``w-1`` is stored as
    ``log2(8 (w-1)/(pw-1) + 1) / 3``; ``pw == w`` means no separate pre-training window."""
    table = sd.get(f"layers.{stage}.blocks.0.attn.relative_coords_table")
    if table is None or window <= 1:
        return 0
    x = 2 ** (3 * table[0, -1, -1, 0].item()) - 1  # 8 (w-1) / (pw-1)
    pw = round(8 * (window - 1) / x + 1)
    return 0 if pw == window else pw


def _img_size(sd: dict, depths: tuple, patch: int) -> int:
    for i in range(len(depths)):
        for j in range(depths[i]):
            mask = sd.get(f"layers.{i}.blocks.{j}.attn_mask")  # (nW, N, N) of the stage's grid
            if mask is not None:
                grid = math.isqrt(mask.shape[0]) * math.isqrt(mask.shape[1])
                return grid * 2**i * patch
    raise ValueError("the checkpoint has no shifted-window mask to read the image size from; pass img_size")


def state_dict_from_official(checkpoint: dict, cfg: SwinConfig, ignore=HEAD_PREFIXES) -> dict:
    """Official (or SimMIM ``encoder.``) keys → ours. Buffers we rebuild are dropped and the
    classification head / SimMIM decoder under ``ignore`` are skipped (see :func:`ignored_keys`);
    every other key is renamed, so a foreign key surfaces in ``load_weights``' report. A
    missing ``mask_token`` becomes zeros (the official initial value)."""
    out = {}
    for k, v in unwrap(checkpoint).items():
        if k.startswith(ignore) or k.endswith(BUFFERS):
            continue
        k = k.replace("attn.relative_position_bias_table", "rel_pos.relative_position_bias_table")
        out[k.replace("attn.cpb_mlp.", "rel_pos.cpb_mlp.")] = v
    out.setdefault("mask_token", torch.zeros(1, 1, cfg.embed_dim))
    return out


def ignored_keys(checkpoint: dict, ignore=HEAD_PREFIXES) -> list[str]:
    """Keys :func:`state_dict_from_official` skips as heads (for reporting)."""
    return sorted(k for k in unwrap(checkpoint) if k.startswith(ignore))
