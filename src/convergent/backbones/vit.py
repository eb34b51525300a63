"""Vision Transformer (Dosovitskiy et al., 2021): class token, absolute positions (learned, or
MoCo v3 / MAE's fixed 2-D sin-cos table, or none) and/or BEiT's shared relative position bias,
pre-norm blocks (optionally with BEiT's layer scale). Serves SimMIM (mask token), MAE (encode kept tokens only), data2vec
(per-block outputs), MoCo v3 / CLIP (pooled class token), ViLT (the blocks over a joint
text + image sequence, :meth:`VisionTransformer.forward_tokens`) and fine-tuning.

Weights map one-to-one onto HF ``ViTModel`` (see ``convergent.converters.hf_vit``); with
``pre_norm=True`` (a LayerNorm before the first block, no patch bias) onto the vision tower
of HF ``CLIPModel`` (``convergent.converters.hf_clip``), whose ``post_layernorm`` of the
class token is our final norm. With ``pos_embed='sincos'`` the table is a persistent buffer under
the same key, so checkpoints, ``save_pretrained`` and the converters see no difference; with
``freeze_patch_embed`` the patch projection's parameters do not require gradients. The BEiT
options (``pos_embed='none'``, ``rel_pos_bias='shared'``, ``layer_scale``; feature distillation's
student) map onto HF ``BeitModel`` (``tests/backbones/test_vit_beit_options.py``), not ``ViTModel``.
"""

import math
from collections import OrderedDict

import torch
from torch import nn

from convergent.backbones.protocol import (
    FeatureInfo,
    ImageBackbone,
    apply_mask_token,
    check_intermediate_output,
    select_indices,
)
from convergent.backbones.vit_spec import ViTConfig
from convergent.layers import (
    Attention,
    Block,
    GridRelativePositionBias,
    PatchEmbed,
    init_linear_norm_,
    init_xavier_linear_norm_,
    interpolate_pos_embed,
    sincos_pos_embed_2d,
)
from convergent.layers.linear import Linear

_EMBEDDING_PARAMS = ("patch_embed.", "cls_token", "pos_embed", "mask_token", "norm_pre.")


class VisionTransformer(ImageBackbone):
    """ViT encoder behind the :class:`~convergent.backbones.protocol.Backbone` contract.

    Tokens are ``(B, 1 + N, C)``: the class token first, then the patch tokens in row-major
    order. Inputs at another resolution than ``config.img_size`` (same patch size) get
    bicubically interpolated position embeddings on the fly, as HF's
    ``interpolate_pos_encoding=True``.
    """

    supports_mask_token = True
    supports_token_drop = True
    supports_patch_tokens = True
    supports_joint_tokens = True
    supports_ffn_targets = True
    num_prefix_tokens = 1
    mask_kind = "block"

    def __init__(self, config: ViTConfig):
        super().__init__(config)
        if config.img_size % config.patch_size:
            raise ValueError(f"img_size {config.img_size} is not a multiple of patch_size {config.patch_size}")
        if config.global_pool not in ("cls", "avg"):
            raise ValueError(f"global_pool must be 'cls' or 'avg', got {config.global_pool!r}")
        c = config.embed_dim
        self.embed_dim = self.num_features = c
        self.grid = (config.img_size // config.patch_size,) * 2
        self.patch_embed = PatchEmbed(config.patch_size, config.in_chans, c, pad=False, bias=not config.pre_norm)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        if config.pos_embed == "sincos":  # fixed: a buffer, saved under the same key as the learned table
            self.register_buffer("pos_embed", sincos_pos_embed_2d(self.grid, c)[None])  # (1, 1 + N, C)
        elif config.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], c))
        else:  # 'none': positions come from the relative position bias only (BEiT, FD)
            self.pos_embed = None
        shared = config.rel_pos_bias == "shared"
        self.rel_pos_bias = GridRelativePositionBias(self.grid, config.num_heads) if shared else None
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c))
        self.pos_drop = nn.Dropout(config.dropout)
        self.norm_pre = nn.LayerNorm(c, eps=config.norm_eps) if config.pre_norm else nn.Identity()
        rates = torch.linspace(0, config.drop_path, config.depth).tolist()  # stochastic depth per block
        self.blocks = nn.ModuleList(
            Block(c, config.num_heads, config.mlp_dim, config.qkv_bias, config.dropout, config.attn_dropout, r,
                  config.norm_eps, config.act, layer_scale=config.layer_scale)
            for r in rates
        )
        self.norm = nn.LayerNorm(c, eps=config.norm_eps)
        self.pooler = nn.Sequential(OrderedDict(dense=Linear(c, c), act=nn.Tanh())) if config.pooler else None
        self.reset_parameters()
        if config.freeze_patch_embed:  # MoCo v3's random patch projection: no gradient, out of the optimizer
            self.patch_embed.proj.requires_grad_(False)

    def reset_parameters(self) -> None:
        """``config.init`` (see :class:`ViTConfig`): 'trunc_normal' (timm) — truncated normal
        (std 0.02) for learned positions, class token and linear weights; 'xavier' (MAE) —
        Xavier-uniform linear weights, class token N(0, 0.02); 'xavier_qkv' (MoCo v3) — as
        'xavier' with q, k, v each Xavier-uniform on its own (C, C) block, class token N(0, 1e-6).
        All: the patch projection Xavier-uniform viewed as a linear map (MAE; MoCo v3's
        ``sqrt(6 / (3 p² + C))`` bound for RGB), zero biases, LayerNorm at identity, the mask
        token as SimMIM (truncated normal, std 0.02), the sin-cos table recomputed."""
        init = self.config.init
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        elif self.pos_embed is not None:
            self.pos_embed.copy_(sincos_pos_embed_2d(self.grid, self.embed_dim)[None])
        if self.rel_pos_bias is not None:  # BEiT: zeros
            nn.init.zeros_(self.rel_pos_bias.relative_position_bias_table)
        if init == "trunc_normal":
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        else:
            nn.init.normal_(self.cls_token, std=0.02 if init == "xavier" else 1e-6)
        nn.init.trunc_normal_(self.mask_token, std=0.02)  # SimMIM's init
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if self.patch_embed.proj.bias is not None:
            nn.init.zeros_(self.patch_embed.proj.bias)
        self.apply(init_linear_norm_ if init == "trunc_normal" else init_xavier_linear_norm_)
        if init == "xavier_qkv":
            for m in self.modules():
                if isinstance(m, Attention):  # q, k, v rows each as a (C, C) matrix: fan_in + fan_out = 2C
                    bound = math.sqrt(6.0 / (m.qkv.weight.shape[0] // 3 + m.qkv.weight.shape[1]))
                    nn.init.uniform_(m.qkv.weight, -bound, bound)

    # --- forward --------------------------------------------------------------------------
    def _check_inputs(self, x: torch.Tensor, mask: torch.Tensor | None, keep: torch.Tensor | None) -> None:
        if x.ndim != 4 or x.shape[1] != self.config.in_chans:
            raise ValueError(
                f"expected images of shape (B, {self.config.in_chans}, H, W), got {tuple(x.shape)}"
            )
        if mask is not None and keep is not None:
            raise ValueError(
                "pass either mask (SimMIM: hidden patches become the mask token) or keep "
                "(MAE: encode only the kept patches), not both"
            )
        if keep is not None and (keep.ndim != 2 or keep.shape[0] != x.shape[0] or keep.is_floating_point()):
            raise ValueError(
                f"keep must be (B={x.shape[0]}, K) integer indices of patch tokens, "
                f"got {tuple(keep.shape)} {keep.dtype}"
            )

    def pos_embed_for(self, grid: tuple[int, int]) -> torch.Tensor | None:
        """Position embeddings ``(1, 1 + Gh*Gw, C)`` for a patch grid: when it differs from the
        configured one, interpolated (learned) or computed for it (sin-cos); None for 'none'."""
        if self.pos_embed is None:
            return None
        if tuple(grid) != self.grid and self.config.pos_embed == "sincos":
            return sincos_pos_embed_2d(grid, self.embed_dim)[None].to(self.pos_embed)
        return interpolate_pos_embed(self.pos_embed, self.grid, grid, num_prefix=1)

    def embed(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images ``(B, C_in, H, W)`` → embedded tokens ``(B, 1 + N or 1 + K, C)`` before the
        blocks (after ``norm_pre`` with ``pre_norm``)."""
        self._check_inputs(x, mask, keep)
        tokens, grid = self.patch_embed(x)  # (B, N, C)
        tokens = apply_mask_token(tokens, mask, self.mask_token)
        pos = self.pos_embed_for(grid)  # (1, 1 + N, C), None without absolute positions
        if pos is not None:
            tokens = tokens + pos[:, 1:]
        if keep is not None:
            index = keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])  # (B, K, C)
            tokens = torch.gather(tokens, 1, index)  # (B, K, C)
        cls = self.cls_token if pos is None else self.cls_token + pos[:, :1]
        cls = cls.expand(tokens.shape[0], -1, -1)  # (B, 1, C)
        return self.norm_pre(self.pos_drop(torch.cat([cls, tokens], dim=1)))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        indices=None,
        keep: torch.Tensor | None = None,
        output: str = "block",
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the encoder and collect block outputs.

        Args:
            x: images ``(B, C_in, H, W)``; H and W multiples of the patch size.
            mask: ``(B, N)`` bool, True where a patch is hidden and replaced by the mask token
                (SimMIM / data2vec student).
            indices: which block outputs to return (None: all, int k: last k, sequence of
                indices, negatives allowed).
            keep: ``(B, K)`` indices of the patch tokens to encode (MAE); the others are
                dropped before the blocks, so kept tokens attend only to each other.
            output: 'block' (block outputs) or 'ffn' (each block's MLP branch before the
                residual), as in :meth:`forward_tokens`.

        Returns:
            final normalised tokens ``(B, 1 + N, C)`` (``1 + K`` with ``keep``) and the selected
            block outputs, taken before the final norm.
        """
        bias = self.attention_bias(self.mask_grid(x), keep)
        return self.forward_tokens(self.embed(x, mask, keep), indices=indices, output=output, bias=bias)

    def attention_bias(self, grid: tuple[int, int], keep: torch.Tensor | None = None) -> torch.Tensor | None:
        """The shared relative position bias for patch grid ``grid``: ``(1, heads, 1 + N, 1 + N)``,
        or with ``keep`` ``(B, K)`` the rows and columns of the class token and the kept patches,
        ``(B, heads, 1 + K, 1 + K)``; None without ``rel_pos_bias``."""
        if self.rel_pos_bias is None:
            return None
        bias = self.rel_pos_bias(grid)  # (H, 1 + N, 1 + N)
        if keep is None:
            return bias.unsqueeze(0)
        pos = torch.cat([keep.new_zeros(keep.shape[0], 1), keep + 1], dim=1)  # (B, 1 + K) token positions
        return bias[:, pos[:, :, None], pos[:, None, :]].transpose(0, 1)  # (B, H, 1 + K, 1 + K)

    def forward_tokens(
        self,
        tokens: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        indices=None,
        output: str = "block",
        bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the blocks and the final norm over already embedded tokens: the output of
        :meth:`embed`, or a longer sequence a task builds around it (ViLT: ``[text ; image]``).

        Args:
            tokens: ``(B, N, C)`` embedded tokens.
            key_padding_mask: ``(B, N)`` bool, True for real tokens, False for padding that no
                token attends to; None: all real.
            indices: which block outputs to return, as in :meth:`forward_intermediates`.
            output: what to collect of those blocks: 'block' (their outputs) or 'ffn' (the MLP
                branch ``mlp(norm2(x))`` before the residual: data2vec_vision's ``layer_results='fc'``).
            bias: the relative position bias of these tokens (:meth:`attention_bias`); required with
                ``rel_pos_bias``, which only :meth:`forward_intermediates`' own tokens have.

        Returns:
            final normalised tokens ``(B, N, C)`` and the selected block outputs (before the norm).
        """
        if tokens.ndim != 3 or tokens.shape[-1] != self.embed_dim:
            raise ValueError(f"expected tokens of shape (B, N, {self.embed_dim}), got {tuple(tokens.shape)}")
        if key_padding_mask is not None and key_padding_mask.shape != tokens.shape[:2]:
            raise ValueError(
                f"key_padding_mask of shape {tuple(key_padding_mask.shape)} does not match tokens "
                f"{tuple(tokens.shape[:2])}"
            )
        if self.rel_pos_bias is not None and bias is None:
            raise ValueError(
                "this ViT has rel_pos_bias 'shared', whose bias is laid out on its own [class ; patches] "
                "tokens: run it through forward_intermediates / forward_features (or pass attention_bias(...))"
            )
        take = set(select_indices(indices, len(self.blocks)))
        check_intermediate_output(output)
        outs = []
        for i, block in enumerate(self.blocks):
            if i in take and output == "ffn":
                tokens, ffn = self.run_block(block, tokens, key_padding_mask, None, True, bias)
                outs.append(ffn)
                continue
            tokens = self.run_block(block, tokens, key_padding_mask, None, False, bias)
            if i in take:
                outs.append(tokens)
        return self.norm(tokens), outs

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, 1 + N, C)`` → ``(B, C)``: class token ('cls') or mean of patch tokens ('avg'),
        then the dense+tanh pooler when configured."""
        x = tokens[:, 0] if self.config.global_pool == "cls" else tokens[:, 1:].mean(dim=1)
        return self.pooler(x) if self.pooler is not None else x

    def mask_grid(self, x: torch.Tensor) -> tuple[int, ...]:
        """``(H/p, W/p)``: the patch grid (the class token is never hidden)."""
        p = self.config.patch_size
        return (x.shape[-2] // p, x.shape[-1] // p)

    @property
    def final_stage_depth(self) -> int:
        return len(self.blocks)

    @property
    def feature_info(self) -> list[FeatureInfo]:
        """One stage: every block keeps the patch grid."""
        return [FeatureInfo(self.embed_dim, self.config.patch_size)]

    # --- training hooks -------------------------------------------------------------------
    def no_weight_decay(self) -> set[str]:
        """Position embeddings and the relative position bias table, class and mask tokens, biases,
        norm weights and layer scales."""
        named = {"pos_embed", "cls_token", "mask_token", "rel_pos_bias.relative_position_bias_table"}
        return {n for n, p in self.named_parameters() if p.ndim <= 1 or n in named}

    @property
    def num_layers(self) -> int:
        return len(self.blocks) + 2

    def layer_id(self, name: str) -> int:
        """0: embeddings; i+1: ``blocks.i``; depth+1: final norm, pooler and the shared relative
        position bias (BEiT's layer decay puts it with the top)."""
        if name.startswith(_EMBEDDING_PARAMS):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        if name.startswith(("norm.", "pooler.", "rel_pos_bias.")):
            return len(self.blocks) + 1
        raise ValueError(f"{type(self).__name__} has no parameter {name!r}")

    # --- resolution transfer --------------------------------------------------------------
    def adapt_state_dict(self, state_dict: dict, source_config: ViTConfig) -> dict:
        """Resize ``pos_embed`` (bicubic) and the shared relative position bias table (bilinear, as
        HF BEiT) saved at ``source_config.img_size`` to this model's grid; with ``pos_embed='sincos'``
        this model's table is the sin-cos table of its grid, whatever was saved."""
        if source_config.patch_size != self.config.patch_size:
            raise ValueError(
                f"cannot load weights with patch_size {source_config.patch_size} into a model with "
                f"patch_size {self.config.patch_size}: the patch projection does not transfer"
            )
        if source_config.img_size % source_config.patch_size:
            raise ValueError(
                f"source img_size {source_config.img_size} is not a multiple of patch_size {source_config.patch_size}"
            )
        old = (source_config.img_size // source_config.patch_size,) * 2
        table = "rel_pos_bias.relative_position_bias_table"
        if old != self.grid and table in state_dict:
            resized = GridRelativePositionBias.resize_table(state_dict[table], old, self.grid)
            state_dict = {**state_dict, table: resized}
        if self.config.pos_embed == "sincos" and "pos_embed" in state_dict:
            return {**state_dict, "pos_embed": sincos_pos_embed_2d(self.grid, self.embed_dim)[None]}
        if old == self.grid or "pos_embed" not in state_dict:
            return state_dict
        state_dict = dict(state_dict)
        state_dict["pos_embed"] = interpolate_pos_embed(state_dict["pos_embed"], old, self.grid, num_prefix=1)
        return state_dict
