"""MAE (He et al., 2022): encode a random 25 % of the patches only, decode every position
with a light Transformer, mean squared error on the hidden patches.

Encoder, decoder and loss are separate pieces: a backbone with token drop
(``forward_features(x, keep=ids)``, ViT) encodes the kept patches chosen by
:func:`~convergent.masking.random_masking`; :class:`~convergent.heads.pixel_decoder.MAEDecoder`
predicts pixels; :func:`~convergent.losses.reconstruction.masked_mse` scores them.
"""

import torch

from convergent.backbones.protocol import ImageBackbone
from convergent.heads.pixel_decoder import MAEDecoder
from convergent.losses.reconstruction import masked_mse, patchify, unpatchify
from convergent.masking import mask_to_pixels, random_masking
from convergent.tasks.base import Task
from convergent.tasks.configs import MAEConfig

NORM_PIX_EPS = 1e-6


class MAE(Task):
    """MAE around a ViT.

    ``forward(batch)`` reads ``batch["image"]`` ``(B, C, H, W)`` and, optionally,
    ``batch["noise"]`` ``(B, N)`` (the argsort noise, for exact reproduction; otherwise
    drawn from the global torch RNG). Returns ``{"loss"}``; with ``return_outputs=True`` also
    ``"prediction"`` ``(B, C, H, W)`` (with ``norm_pix_loss`` mapped back to pixels with
    each target patch's mean and std, for pictures) and ``"mask_pixels"`` ``(B, 1, H, W)``.

    The decoder shares the encoder's LayerNorm epsilon and activation (as HF ViTMAE).
    """

    name = "mae"
    reconstructs = True
    batch_keys = ("image",)
    modality = "image"
    requires = ("supports_token_drop",)

    def __init__(self, backbone: ImageBackbone, config: MAEConfig):
        super().__init__(backbone, config)
        self.patch_size = p = backbone.patch_size
        grid = backbone.image_size // p
        self.decoder = MAEDecoder(
            grid * grid,
            backbone.num_features,
            config.decoder_dim,
            config.decoder_depth,
            config.decoder_heads,
            p,
            backbone.in_chans,
            eps=backbone.norm_eps,
            act=backbone.act,
        )

    def forward(self, batch: dict[str, torch.Tensor], return_outputs: bool = False) -> dict[str, torch.Tensor]:
        images = batch["image"]
        b, c, h, w = images.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"MAE needs image sides that are multiples of the patch size {p}, got {h}x{w}")
        grid = (h // p, w // p)
        n = grid[0] * grid[1]
        ids_keep, mask, ids_restore = random_masking(
            b, n, self.config.mask_ratio, noise=batch.get("noise"), device=images.device
        )
        tokens = self.backbone.forward_features(images, keep=ids_keep)  # (B, 1+K, C)
        pred = self.decoder(tokens, ids_restore, grid)  # (B, N, p²·C)
        target = patchify(images, p)  # (B, N, p²·C)
        out = {"loss": masked_mse(pred, target, mask, self.config.norm_pix_loss, NORM_PIX_EPS)}
        if return_outputs:
            shown = pred.detach()
            if self.config.norm_pix_loss:  # back to pixels with the target patch statistics
                mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
                shown = shown * (var + NORM_PIX_EPS) ** 0.5 + mean
            out["prediction"] = unpatchify(shown, p, grid, c)
            out["mask_pixels"] = mask_to_pixels(mask, grid, p).unsqueeze(1)
        return out

    def no_weight_decay(self) -> set[str]:
        """The base set plus the decoder's mask token (as SimMIM and BEiT exclude theirs)."""
        return super().no_weight_decay() | {"decoder.mask_token"}


# --- HF ViTMAEForPreTraining decoder weights --------------------------------------------------

_BLOCK_NAMES = {
    # ours: (transformers 5.x, 4.x checkpoint layout)
    "norm1": ("layernorm_before", "layernorm_before"),
    "attn.proj": ("attention.o_proj", "attention.output.dense"),
    "norm2": ("layernorm_after", "layernorm_after"),
    "mlp.fc1": ("mlp.fc1", "intermediate.dense"),
    "mlp.fc2": ("mlp.fc2", "output.dense"),
}
_QKV = (("q_proj", "k_proj", "v_proj"), ("attention.query", "attention.key", "attention.value"))


def decoder_state_dict_from_hf(state_dict: dict) -> dict:
    """HF ``ViTMAEForPreTraining`` state dict (5.x or 4.x layout) → :class:`MAEDecoder` state
    dict. Keys outside ``decoder.`` (the ``vit.`` encoder, see
    ``convergent.converters.hf_vit.state_dict_from_hf``) are ignored; any ``decoder.`` key
    not understood raises one ``KeyError`` listing them all."""
    src = {k[len("decoder.") :]: v for k, v in state_dict.items() if k.startswith("decoder.")}
    used: set[str] = set()

    def take(key: str):
        if key not in src:
            raise KeyError(f"HF ViTMAE state dict lacks 'decoder.{key}'")
        used.add(key)
        return src[key]

    out = {"mask_token": take("mask_token"), "pos_embed": take("decoder_pos_embed")}
    for ours, hf in (("embed", "decoder_embed"), ("norm", "decoder_norm"), ("pred", "decoder_pred")):
        for t in ("weight", "bias"):
            out[f"{ours}.{t}"] = take(f"{hf}.{t}")
    legacy = any(".attention.attention." in k for k in src)
    depth = len({k.split(".")[1] for k in src if k.startswith("decoder_layers.")})
    for i in range(depth):
        base = f"decoder_layers.{i}."
        for ours, names in _BLOCK_NAMES.items():
            for t in ("weight", "bias"):
                out[f"blocks.{i}.{ours}.{t}"] = take(f"{base}{names[legacy]}.{t}")
        for t in ("weight", "bias"):  # q, k, v stacked on the output dimension: (3D, D), (3D,)
            qkv = [take(f"{base}attention.{q}.{t}") for q in _QKV[legacy]]
            out[f"blocks.{i}.attn.qkv.{t}"] = torch.cat(qkv)
    left = sorted(set(src) - used)
    if left:
        raise KeyError(f"HF ViTMAE state dict: {len(left)} decoder keys were not understood: {left}")
    return out
