"""ConvNeXt V1 (Liu et al. 2022, "A ConvNet for the 2020s"), as the official code, timm and HF
``ConvNextModel`` build it:

* stem: a ``patch_size`` × ``patch_size`` convolution of stride ``patch_size`` + LayerNorm;
* blocks: 7×7 depthwise convolution, LayerNorm, pointwise MLP (4×, GELU), layer scale,
  stochastic depth, residual;
* between stages: LayerNorm + 2×2 convolution of stride 2 (odd maps lose their last
  row/column, as in HF and timm);
* head: global average pooling, then LayerNorm.

The final tokens are the last stage's map flattened row-major, **not normalised per token**:
the final LayerNorm follows the pooling (paper, timm, HF ``pooler_output``), so
``forward_features`` equals HF's ``last_hidden_state`` and :meth:`ConvNeXt.pooled` its
``pooler_output``. Pooling ``"default"`` gives the paper's head input; ``"avg"`` averages the
un-normalised tokens.

Masking is SimMIM's: masked stem outputs (after the stem norm) are replaced by a learned mask
token, as SparK and ConvNeXt V2 discuss for convnets (dense convolutions let the mask token's
neighbours see it, unlike sparse convolutions; enough for SimMIM and data2vec students).
"""

from typing import Any

import torch
from torch import nn

from convergent.backbones.convnext_spec import ConvNeXtConfig
from convergent.backbones.protocol import (
    FeatureInfo,
    ImageBackbone,
    apply_mask_token,
    coarsen_mask,
    select_indices,
)
from convergent.layers import DropPath, Mlp, PatchEmbed, init_linear_norm_


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map (ConvNeXt's ``channels_first`` norm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # norm over C at (B, H, W, C)


class ConvNeXtBlock(nn.Module):
    """``x + drop_path(gamma · mlp(norm(dwconv(x))))`` on ``(B, C, H, W)`` maps."""

    def __init__(self, cfg: ConvNeXtConfig, dim: int, drop_path: float):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.mlp = Mlp(dim, 4 * dim, cfg.dropout, cfg.act)  # the pointwise convolutions, as linears
        self.gamma = nn.Parameter(torch.full((dim,), cfg.layer_scale_init)) if cfg.layer_scale_init > 0 else None
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` → same shape."""
        y = self.dwconv(x).permute(0, 2, 3, 1)  # (B, H, W, C)
        y = self.mlp(self.norm(y))
        if self.gamma is not None:
            y = y * self.gamma
        return x + self.drop_path(y.permute(0, 3, 1, 2))  # (B, C, H, W)


class Downsample(nn.Module):
    """LayerNorm, then a 2×2 convolution of stride 2: ``(B, C_in, H, W)`` → ``(B, C_out, H/2, W/2)``."""

    def __init__(self, in_dim: int, out_dim: int, eps: float):
        super().__init__()
        self.norm = LayerNorm2d(in_dim, eps=eps)
        self.conv = nn.Conv2d(in_dim, out_dim, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x))


class ConvNeXtStage(nn.Module):
    """Downsampling (all stages but the first), then the stage's blocks."""

    def __init__(self, cfg: ConvNeXtConfig, i: int, drop_paths: list[float]):
        super().__init__()
        dim = cfg.dims[i]
        self.downsample = Downsample(cfg.dims[i - 1], dim, cfg.norm_eps) if i > 0 else nn.Identity()
        self.blocks = nn.ModuleList(ConvNeXtBlock(cfg, dim, p) for p in drop_paths)


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` map → ``(B, H*W, C)`` tokens, row-major."""
    return x.flatten(2).transpose(1, 2)


class ConvNeXt(ImageBackbone):
    """ConvNeXt backbone: ``(B, C, H, W)`` images → ``(B, H/s * W/s, dims[-1])`` tokens with
    ``s = patch_size · 2^(stages-1)`` (32 for the paper's models)."""

    supports_mask_token = True
    supports_token_drop = False
    num_prefix_tokens = 0

    def __init__(self, config: ConvNeXtConfig):
        super().__init__(config)
        cfg = config
        self.embed_dim = cfg.dims[0]
        self.num_features = cfg.dims[-1]
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, cfg.dims[0], norm=True, eps=cfg.norm_eps)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.dims[0]))
        rates = torch.linspace(0, cfg.drop_path, sum(cfg.depths)).tolist()
        starts = [sum(cfg.depths[:i]) for i in range(len(cfg.depths))]
        self.stages = nn.ModuleList(
            ConvNeXtStage(cfg, i, rates[s : s + d]) for i, (s, d) in enumerate(zip(starts, cfg.depths))
        )
        self.norm = nn.LayerNorm(cfg.dims[-1], eps=cfg.head_norm_eps)  # after global pooling
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official init: truncated normal (std 0.02) convolution and linear weights, zero
        biases, unit norms, layer scales at ``layer_scale_init``; the mask token as SimMIM's."""
        self.apply(_init_weights)
        for stage in self.stages:
            for blk in stage.blocks:
                if blk.gamma is not None:
                    nn.init.constant_(blk.gamma, self.config.layer_scale_init)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    # --- contract -----------------------------------------------------------------------
    def forward_intermediates(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, indices: Any = None, **kwargs
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Images → (final tokens ``(B, N, C)``, un-normalised; [outputs of the selected blocks,
        counted over all stages, as tokens ``(B, N_stage, C_stage)``]). ``mask``
        ``(B, (H/p)·(W/p))`` replaces masked stem outputs by the mask token (SimMIM)."""
        if kwargs:
            raise TypeError(f"unexpected arguments for ConvNeXt: {sorted(kwargs)}")
        take = set(select_indices(indices, sum(self.config.depths)))
        tokens, (h, w) = self.patch_embed(x)  # (B, H/p * W/p, C0), normalised
        tokens = apply_mask_token(tokens, mask, self.mask_token)
        x = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)  # (B, C0, H/p, W/p)
        out, k = [], 0
        for stage in self.stages:
            x = stage.downsample(x)  # (B, C_i, H_i, W_i)
            for blk in stage.blocks:
                x = self.run_block(blk, x)
                if k in take:
                    out.append(to_tokens(x))
                k += 1
        return to_tokens(x), out

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, N, C)`` → ``(B, C)``: average, then the final LayerNorm (HF's ``pooler_output``)."""
        return self.norm(tokens.mean(dim=1))

    def mask_grid(self, x: torch.Tensor) -> tuple[int, ...]:
        """``(H/p, W/p)``: the stem's output grid."""
        p = self.config.patch_size
        return (x.shape[-2] // p, x.shape[-1] // p)

    @property
    def mask_unit(self) -> int:
        """Stem cells per side of one final token: each downsampling halves the map."""
        return 2 ** (len(self.config.depths) - 1)

    def output_mask(self, mask: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """Stem mask ``(B, Gh*Gw)`` → ``(B, (Gh//u) * (Gw//u))`` with ``u = mask_unit``: a final
        token is hidden when all its ``u × u`` stem cells are (cells the strided downsampling
        drops belong to no token)."""
        return coarsen_mask(mask, grid, self.mask_unit, pad=False)

    @property
    def final_stage_depth(self) -> int:
        return self.config.depths[-1]

    @property
    def feature_info(self) -> list[FeatureInfo]:
        """Stage ``i``: ``dims[i]`` channels at ``patch_size · 2^i`` pixels per token."""
        p = self.config.patch_size
        return [FeatureInfo(d, p * 2**i) for i, d in enumerate(self.config.dims)]

    @property
    def output_grid(self) -> tuple[int, int]:
        """Final map at ``image_size`` (strided convolutions round down)."""
        side = self.image_size // self.output_stride
        return (side, side)

    def no_weight_decay(self) -> set[str]:
        """Biases, norms, layer scales (1-d) and the mask token."""
        return {n for n, p in self.named_parameters() if p.ndim <= 1 or n == "mask_token"}

    @property
    def num_layers(self) -> int:
        return sum(self.config.depths) + 2

    def layer_id(self, name: str) -> int:
        """Layer-decay id as the official ConvNeXt / timm, one id per block: stem and mask token
        0, block k (over all stages) k+1, a stage's downsampling with its first block, final
        norm ``num_layers - 1``."""
        depths = self.config.depths
        if name.startswith(("patch_embed.", "mask_token")):
            return 0
        if name.startswith("stages."):
            parts = name.split(".")
            stage = int(parts[1])
            block = int(parts[3]) if parts[2] == "blocks" else 0
            return sum(depths[:stage]) + block + 1
        return self.num_layers - 1


def _init_weights(module: nn.Module) -> None:
    """For ``module.apply``: convolutions as linears (truncated normal 0.02, zero bias)."""
    if isinstance(module, nn.Conv2d):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    else:
        init_linear_norm_(module)
