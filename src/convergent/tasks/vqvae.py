"""VQ-VAE (van den Oord et al., 2017): an image tokenizer. Any image backbone encodes; its final
token map (prefix tokens dropped; one token per ``output_stride`` pixels) is projected to
``code_dim`` and replaced by the nearest codes of an EMA codebook
(:class:`~convergent.layers.quantize.VectorQuantizer`); a convolutional decoder
(:class:`~convergent.heads.conv_decoder.ConvDecoder`) reconstructs the image from the codes.
Loss: MSE of the reconstruction (in the input's normalised space) + the commitment loss.

A trained run is an image tokenizer: ``load_task_from_run(run)`` gives this task, whose
:meth:`VQVAE.encode` turns images into ``(B, h, w)`` code ids and :meth:`VQVAE.decode` ids back
into images (the targets of BEiT, the image half of text-to-image).

Deviation from the paper: the paper's encoder is two strided 4×4 convolutions and a residual
stack; here it is whichever image backbone the run names (the presets: a two-stage ConvNeXt of
stride 4), so the tokenizer's grid is that backbone's.
"""

import torch
import torch.nn.functional as F

from convergent.backbones.protocol import ImageBackbone
from convergent.heads.conv_decoder import ConvDecoder
from convergent.layers.linear import Linear
from convergent.layers.quantize import VectorQuantizer
from convergent.tasks.base import Task
from convergent.tasks.configs import VQVAEConfig


class VQVAE(Task):
    """VQ-VAE around an image backbone.

    ``forward(batch)`` reads ``batch["image"]`` ``(B, C, H, W)`` (sides multiples of the
    backbone's ``output_stride``) and returns ``{"loss", "reconstruction", "commitment",
    "perplexity", "codebook_usage"}``; with ``return_outputs=True`` also ``"prediction"`` (the
    reconstruction) and ``"mask_pixels"`` (all ones: every pixel is predicted), for pictures.
    """

    name = "vqvae"
    reconstructs = True
    batch_keys = ("image",)
    modality = "image"

    def __init__(self, backbone: ImageBackbone, config: VQVAEConfig):
        super().__init__(backbone, config)
        self.stride = backbone.output_stride
        self.num_prefix = backbone.num_prefix_tokens
        self.pre_quant = Linear(backbone.num_features, config.code_dim)
        self.quantizer = VectorQuantizer(config.num_codes, config.code_dim, config.decay, config.commitment,
                                         config.eps, config.restart_threshold)  # fmt: skip
        self.decoder = ConvDecoder(config.code_dim, self.stride, backbone.in_chans, config.decoder_width,
                                   config.decoder_res_blocks)  # fmt: skip

    @property
    def num_codes(self) -> int:
        """Size of the vocabulary of visual tokens."""
        return self.quantizer.num_codes

    def grid(self, images: torch.Tensor) -> tuple[int, int]:
        """Token grid ``(h, w)`` of ``images`` ``(B, C, H, W)``."""
        h, w = images.shape[-2:]
        s = self.stride
        if h % s or w % s:
            raise ValueError(f"VQ-VAE needs images whose sides are multiples of the encoder stride {s}, got {h}x{w}")
        return h // s, w // s

    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Continuous latents ``(B, h*w, code_dim)`` before quantisation."""
        tokens = self.backbone.forward_features(images)[:, self.num_prefix :]  # (B, h*w, C)
        return self.pre_quant(tokens)

    def forward(self, batch: dict[str, torch.Tensor], return_outputs: bool = False) -> dict[str, torch.Tensor]:
        images = batch["image"]
        grid = self.grid(images)
        q = self.quantizer(self.encode_latents(images))
        prediction = self.decoder(q.quantized, grid)  # (B, C, H, W)
        reconstruction = F.mse_loss(prediction.float(), images.float())
        out = {
            "loss": reconstruction + q.commitment,
            "reconstruction": reconstruction.detach(),
            "commitment": q.commitment.detach(),
            "perplexity": q.perplexity,
            "codebook_usage": q.usage,
        }
        if return_outputs:
            out.update(prediction=prediction, mask_pixels=torch.ones_like(images[:, :1]))
        return out

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Code ids ``(B, h, w)`` of images ``(B, C, H, W)`` (normalised as the run's data)."""
        h, w = self.grid(images)
        ids = self.quantizer.nearest(self.encode_latents(images).flatten(0, 1))
        return ids.view(images.shape[0], h, w)

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, h*stride, w*stride)`` (the run's normalised space) of code ids ``(B, h, w)``."""
        if ids.ndim != 3:
            raise ValueError(f"decode takes code ids (B, h, w), got shape {tuple(ids.shape)}")
        b, h, w = ids.shape
        return self.decoder(self.quantizer.lookup(ids.reshape(b, h * w)), (h, w))
