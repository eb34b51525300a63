"""Swin Transformer V1 and V2 in one implementation, selected by ``SwinConfig.version``.

V1 (Liu et al. 2021): pre-norm blocks, scaled dot-product attention inside (shifted)
windows plus a learned relative position bias table; patch merging normalises then reduces.
V2 (Liu et al. 2022): res-post-norm blocks, scaled cosine attention with a learned logit
scale, a log-spaced continuous position bias (MLP) that transfers across window sizes, patch
merging reduces then normalises, only q and v carry biases.

Windows and shift follow the official code: a stage whose resolution is not larger than the
window uses one window of that size and no shift; inputs whose grid is not a multiple of the
window are padded on the right/bottom (as HF does).
"""

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from convergent.backbones.configs import replace_config
from convergent.backbones.protocol import (
    FeatureInfo,
    ImageBackbone,
    apply_mask_token,
    coarsen_mask,
    select_indices,
)
from convergent.backbones.swin_spec import SwinConfig
from convergent.layers import (
    Attention,
    ContinuousPositionBias,
    DropPath,
    Mlp,
    PatchEmbed,
    PatchMerging,
    RelativePositionBias,
    init_linear_norm_,
    interpolate_pos_embed,
    interpolate_rel_pos_table,
    shift_attn_mask,
    window_partition,
    window_reverse,
)


def stage_grids(cfg: SwinConfig) -> list[tuple[int, int]]:
    """Token grid of each stage for the configured image size (patch and merge padding round up)."""
    g = math.ceil(cfg.img_size / cfg.patch_size)
    grids = []
    for _ in cfg.depths:
        grids.append((g, g))
        g = math.ceil(g / 2)
    return grids


def effective_window(grid: tuple[int, int], window_size: int) -> tuple[int, int]:
    """Window side and shift of a stage: one unshifted window when the grid is not larger."""
    if min(grid) <= window_size:
        return min(grid), 0
    return window_size, window_size // 2


class SwinBlock(nn.Module):
    """One (shifted-)window attention block; ``shifted`` blocks roll by half a window."""

    def __init__(self, cfg: SwinConfig, dim: int, num_heads: int, grid: tuple[int, int], shifted: bool, **kw):
        super().__init__()
        drop_path, pretrained_ws = kw["drop_path"], kw["pretrained_window_size"]
        self.ws, shift = effective_window(grid, cfg.window_size)
        self.shift = shift if shifted else 0
        self.post_norm = cfg.version == 2
        self.norm1 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.attn = Attention(
            dim,
            num_heads,
            qkv_bias=cfg.qkv_bias,
            key_bias=cfg.version == 1,
            cosine=cfg.version == 2,
            attn_drop=cfg.attn_dropout,
            proj_drop=cfg.dropout,
        )
        ws2 = (self.ws, self.ws)
        if cfg.version == 1:
            self.rel_pos = RelativePositionBias(ws2, num_heads)
        else:
            self.rel_pos = ContinuousPositionBias(ws2, num_heads, (pretrained_ws, pretrained_ws))
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), cfg.dropout, cfg.act)
        # shift mask for the configured resolution, built once; other resolutions are memoised
        padded = tuple(math.ceil(g / self.ws) * self.ws for g in grid)
        mask = shift_attn_mask(*padded, self.ws, self.shift) if self.shift else None
        self.register_buffer("shift_mask", mask, persistent=False)
        self._mask_grid = padded
        self._mask_cache: dict = {}

    def _shift_mask(self, hp: int, wp: int, device: torch.device) -> torch.Tensor | None:
        if not self.shift:
            return None
        if (hp, wp) == self._mask_grid:
            return self.shift_mask
        key = (hp, wp, str(device))
        if key not in self._mask_cache:
            self._mask_cache[key] = shift_attn_mask(hp, wp, self.ws, self.shift, device)
        return self._mask_cache[key]

    def _window_attention(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        h, w = grid
        b, _, c = x.shape
        ws, shift = self.ws, self.shift
        x = x.view(b, h, w, c)
        pad_h, pad_w = (ws - h % ws) % ws, (ws - w % ws) % ws
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        windows = window_partition(x, ws)  # (B, nW, ws*ws, C)
        bias = self.rel_pos()  # (heads, N, N)
        mask = self._shift_mask(hp, wp, x.device)
        if mask is not None:
            bias = bias + mask.to(bias.dtype)  # (nW, heads, N, N), broadcast over the batch
        x = window_reverse(self.attn(windows, bias=bias), ws, hp, wp)
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        if pad_h or pad_w:
            x = x[:, :h, :w]
        return x.reshape(b, h * w, c)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``(B, H*W, C)`` → same shape."""
        if self.post_norm:  # V2: res-post-norm
            x = x + self.drop_path(self.norm1(self._window_attention(x, grid)))
            return x + self.drop_path(self.norm2(self.mlp(x)))
        x = x + self.drop_path(self._window_attention(self.norm1(x), grid))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinStage(nn.Module):
    """Blocks at one resolution, alternating regular and shifted windows, then patch merging."""

    def __init__(self, cfg: SwinConfig, i: int, dim: int, grid: tuple[int, int], drop_paths: list[float]):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(
                cfg,
                dim,
                cfg.num_heads[i],
                grid,
                shifted=j % 2 == 1,
                drop_path=drop_paths[j],
                pretrained_window_size=cfg.pretrained_window_sizes[i],
            )
            for j in range(cfg.depths[i])
        )
        last = i == len(cfg.depths) - 1
        self.downsample = None if last else PatchMerging(dim, post_norm=cfg.version == 2, eps=cfg.norm_eps)


class SwinTransformer(ImageBackbone):
    """Swin V1/V2 backbone: ``(B, 3, H, W)`` images → ``(B, H/32 * W/32, 8C)`` tokens (4 stages)."""

    supports_mask_token = True

    def __init__(self, config: SwinConfig):
        super().__init__(config)
        cfg = config
        self.embed_dim = cfg.embed_dim
        self.num_features = cfg.embed_dim * 2 ** (len(cfg.depths) - 1)
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, cfg.embed_dim, cfg.patch_norm, True, cfg.norm_eps)
        # SimMIM's init; a zero token makes q = k = 0 in V2's cosine attention of fully
        # masked windows, where normalising a zero vector has a 1/eps (1e12) gradient
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        grids = stage_grids(cfg)
        if cfg.ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, grids[0][0] * grids[0][1], cfg.embed_dim))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        else:
            self.absolute_pos_embed = None
        self.pos_drop = nn.Dropout(cfg.dropout)
        rates = torch.linspace(0, cfg.drop_path, sum(cfg.depths)).tolist()
        starts = [sum(cfg.depths[:i]) for i in range(len(cfg.depths))]
        self.layers = nn.ModuleList(
            SwinStage(cfg, i, cfg.embed_dim * 2**i, grids[i], rates[s : s + d])
            for i, (s, d) in enumerate(zip(starts, cfg.depths))
        )
        self.norm = nn.LayerNorm(self.num_features, eps=cfg.norm_eps)
        self.apply(init_linear_norm_)  # as the official code: trunc_normal(0.02) linears, unit norms

    # --- contract -----------------------------------------------------------------------
    def forward_intermediates(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, indices: Any = None, **kwargs
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Images → (final normalised tokens, [outputs of the selected blocks, counted over
        all stages, before patch merging and the final norm]). ``mask`` ``(B, N_patches)``
        replaces masked patch embeddings by the mask token (SimMIM)."""
        if kwargs:
            raise TypeError(f"unexpected arguments for SwinTransformer: {sorted(kwargs)}")
        take = set(select_indices(indices, sum(self.config.depths)))
        x, grid = self.patch_embed(x)  # (B, N, C)
        x = apply_mask_token(x, mask, self.mask_token)
        if self.absolute_pos_embed is not None:
            x = x + self._abs_pos(grid)
        x = self.pos_drop(x)
        out, k = [], 0
        for stage in self.layers:
            for blk in stage.blocks:
                x = self.run_block(blk, x, grid)
                if k in take:
                    out.append(x)
                k += 1
            if stage.downsample is not None:
                x, grid = stage.downsample(x, grid)
        return self.norm(x), out

    def _abs_pos(self, grid: tuple[int, int]) -> torch.Tensor:
        g0 = stage_grids(self.config)[0]
        return interpolate_pos_embed(self.absolute_pos_embed, g0, grid, num_prefix=0)

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """Average over tokens ``(B, N, C)`` → ``(B, C)``."""
        return tokens.mean(dim=1)

    def mask_grid(self, x: torch.Tensor) -> tuple[int, ...]:
        """``(ceil(H/p), ceil(W/p))``: the patch grid (images are padded to whole patches)."""
        p = self.config.patch_size
        return (-(-x.shape[-2] // p), -(-x.shape[-1] // p))

    @property
    def mask_unit(self) -> int:
        """Patches per side of one final token: each patch merging halves the grid."""
        return 2 ** (len(self.config.depths) - 1)

    def output_mask(self, mask: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """Patch mask ``(B, Gh*Gw)`` → ``(B, ceil(Gh/u) * ceil(Gw/u))`` with ``u = mask_unit``:
        a final token is hidden when all its ``u × u`` patches are (the padding that patch
        merging adds on the right/bottom does not count)."""
        return coarsen_mask(mask, grid, self.mask_unit, pad=True)

    @property
    def final_stage_depth(self) -> int:
        return self.config.depths[-1]

    @property
    def feature_info(self) -> list[FeatureInfo]:
        """Each stage doubles the width and (after the first) halves the grid."""
        c, p = self.config.embed_dim, self.config.patch_size
        return [FeatureInfo(c * 2**i, p * 2**i) for i in range(len(self.config.depths))]

    def no_weight_decay(self) -> set[str]:
        skip = ("absolute_pos_embed", "mask_token", "relative_position_bias_table", "logit_scale", "cpb_mlp")
        return {n for n, p in self.named_parameters() if p.ndim <= 1 or any(s in n for s in skip)}

    @property
    def num_layers(self) -> int:
        return sum(self.config.depths) + 2

    def layer_id(self, name: str) -> int:
        """Layer-decay id as in SimMIM: embeddings 0, block k (over all stages) k+1, a stage's
        patch merging with its last block, final norm ``num_layers - 1``."""
        depths = self.config.depths
        if name.startswith(("patch_embed", "mask_token", "absolute_pos_embed")):
            return 0
        if name.startswith("layers."):
            parts = name.split(".")
            stage = int(parts[1])
            if parts[2] == "downsample":
                return sum(depths[: stage + 1])
            return sum(depths[:stage]) + int(parts[3]) + 1
        return self.num_layers - 1

    # --- resolution / window transfer -----------------------------------------------------
    @classmethod
    def transfer_config(cls, source_config: SwinConfig, config: SwinConfig, overrides: dict) -> SwinConfig:
        """Swin V2 loaded at another window size: unless given, ``pretrained_window_sizes``
        become the source's per-stage windows, so the continuous bias is evaluated on the
        coordinate scale it was trained on (Swin V2 paper, sec. 3.4)."""
        if (
            config.version == 2
            and "pretrained_window_sizes" not in overrides
            and stage_windows(source_config) != stage_windows(config)
        ):
            src = source_config.pretrained_window_sizes
            pws = src if any(src) else tuple(stage_windows(source_config))
            return replace_config(config, pretrained_window_sizes=tuple(pws))
        return config

    def adapt_state_dict(self, state_dict: dict, source_config: SwinConfig) -> dict:
        """V1 bias tables are resized bicubically to the new window; an absolute position
        embedding is resized to the new grid; V2's continuous bias needs nothing (its
        coordinate tables are rebuilt buffers)."""
        sd = dict(state_dict)
        own = self.state_dict()
        for k, v in state_dict.items():
            if k.endswith("relative_position_bias_table") and k in own and own[k].shape != v.shape:
                old = (int(math.isqrt(v.shape[0])) + 1) // 2
                new = (int(math.isqrt(own[k].shape[0])) + 1) // 2
                sd[k] = interpolate_rel_pos_table(v, (old, old), (new, new))
        if "absolute_pos_embed" in sd and own.get("absolute_pos_embed") is not None:
            old_g, new_g = stage_grids(source_config)[0], stage_grids(self.config)[0]
            sd["absolute_pos_embed"] = interpolate_pos_embed(sd["absolute_pos_embed"], old_g, new_g, num_prefix=0)
        return sd


def stage_windows(cfg: SwinConfig) -> list[int]:
    """Effective window side per stage."""
    return [effective_window(g, cfg.window_size)[0] for g in stage_grids(cfg)]
