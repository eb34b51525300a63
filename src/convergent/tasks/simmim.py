"""SimMIM (Xie et al., 2022): hide random squares of the image behind a learned mask token,
predict the raw pixels (or, as the official Swin V2 configs, locally normalised ones) with a
linear head, L1 on the masked pixels only.

Encoder, decoder and loss are separate pieces: any image backbone with a mask token
(``forward_features(x, mask=...)``; its final tokens, prefix tokens dropped, form the grid of
its declared ``output_stride`` — ViT: the patch size; Swin: patch size · 2^(stages-1)) feeds a
:class:`~convergent.heads.pixel_decoder.LinearPixelDecoder`, scored by
:func:`~convergent.losses.reconstruction.masked_l1`.
"""

import torch

from convergent.backbones.protocol import ImageBackbone
from convergent.heads.pixel_decoder import LinearPixelDecoder
from convergent.losses.reconstruction import local_normalize, masked_l1
from convergent.masking import SimMIMMaskGenerator, mask_to_pixels
from convergent.tasks.base import Task
from convergent.tasks.configs import SimMIMConfig


class SimMIM(Task):
    """SimMIM around an image backbone.

    ``forward(batch)`` reads ``batch["image"]`` ``(B, C, H, W)`` and, optionally,
    ``batch["mask"]`` ``(B, (H/p)·(W/p))`` bool at the backbone's patch resolution (True =
    hidden); without it a mask is drawn from the global torch RNG (reproducible under a
    seeded, checkpointed RNG state). Returns ``{"loss", "masked_pixels"}`` (the fraction of
    pixels hidden); with ``return_outputs=True`` also ``"prediction"`` ``(B, C, H, W)`` and
    ``"mask_pixels"`` ``(B, 1, H, W)``.
    """

    name = "simmim"
    reconstructs = True
    batch_keys = ("image",)
    modality = "image"
    requires = ("supports_mask_token",)

    def __init__(self, backbone: ImageBackbone, config: SimMIMConfig):
        super().__init__(backbone, config)
        self.patch_size = backbone.patch_size
        if config.mask_patch_size % self.patch_size:
            raise ValueError(
                f"SimMIM mask_patch_size {config.mask_patch_size} must be a multiple of the backbone's "
                f"patch_size {self.patch_size}"
            )
        self.num_prefix = backbone.num_prefix_tokens
        self.encoder_stride = config.encoder_stride or backbone.output_stride
        self.decoder = LinearPixelDecoder(backbone.num_features, self.encoder_stride, backbone.in_chans)

    def forward(self, batch: dict[str, torch.Tensor], return_outputs: bool = False) -> dict[str, torch.Tensor]:
        images = batch["image"]
        b, _, h, w = images.shape
        p, s = self.patch_size, self.encoder_stride
        if h % s or w % s:
            raise ValueError(f"SimMIM needs images whose sides are multiples of the encoder stride {s}, got {h}x{w}")
        mask = batch.get("mask")
        if mask is None:
            mask = self.draw_mask(b, h, w, images.device)
        elif mask.shape != (b, (h // p) * (w // p)):
            raise ValueError(
                f"batch['mask'] must be (B={b}, {(h // p) * (w // p)}) at the {p}-px patch resolution, "
                f"got {tuple(mask.shape)}"
            )
        mask = mask.bool()
        tokens = self.backbone.forward_features(images, mask=mask)[:, self.num_prefix :]  # (B, h/s * w/s, C)
        prediction = self.decoder(tokens, grid=(h // s, w // s))  # (B, C, H, W)
        mask_pixels = mask_to_pixels(mask, (h // p, w // p), p).unsqueeze(1)  # (B, 1, H, W)
        target = local_normalize(images, self.config.norm_target_window) if self.config.norm_target else images
        out = {
            "loss": masked_l1(prediction, target, mask_pixels),
            "masked_pixels": mask_pixels.float().mean(),
        }
        if return_outputs:
            out.update(prediction=prediction, mask_pixels=mask_pixels)
        return out

    def draw_mask(self, b: int, h: int, w: int, device: torch.device) -> torch.Tensor:
        """SimMIM masks ``(B, (H/p)²)`` from the global RNG for square ``H = W`` images."""
        if h != w:
            raise ValueError(f"SimMIM draws square masks; got {h}x{w} images (pass batch['mask'] instead)")
        cfg = self.config
        return SimMIMMaskGenerator(h, cfg.mask_patch_size, self.patch_size, cfg.mask_ratio)(b, device=device)


def decoder_state_dict_from_hf(state_dict: dict) -> dict:
    """HF ``*ForMaskedImageModeling`` state dict → :class:`LinearPixelDecoder` state dict
    (``decoder.0`` is the 1×1 convolution; the pixel shuffle has no weights)."""
    try:
        return {"proj.weight": state_dict["decoder.0.weight"], "proj.bias": state_dict["decoder.0.bias"]}
    except KeyError as e:
        raise KeyError(f"HF masked-image-modelling state dict lacks {e.args[0]!r}") from None
