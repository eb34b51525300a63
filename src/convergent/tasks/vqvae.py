"""VQ-VAE (van den Oord et al., 2017): an image tokenizer. Any image backbone encodes; its final
token map (prefix tokens dropped; one token per ``output_stride`` pixels) is projected to
``code_dim`` and replaced by the nearest codes of an EMA codebook
(:class:`~convergent.layers.quantize.VectorQuantizer`); a convolutional decoder
(:class:`~convergent.heads.conv_decoder.ConvDecoder`) reconstructs the image from the codes.
Loss: MSE of the reconstruction (in the input's normalised space) + the commitment loss.

A trained run is an image tokenizer: it saves this task into ``RUN/image_tokenizer/``
(:meth:`VQVAE.save_pretrained`: the encoder as ``encoder/``, the config as ``vqvae.json``, the
projection, codebook and decoder as ``heads.safetensors``), which
:meth:`VQVAE.from_pretrained` loads by path; :meth:`VQVAE.encode` turns images into ``(B, h,
w)`` code ids and :meth:`VQVAE.decode` ids back into images (the targets of BEiT, the image
half of text-to-image).

Deviation from the paper: the paper's encoder is two strided 4×4 convolutions and a residual
stack; here it is whichever image backbone the run names (the presets: a two-stage ConvNeXt of
stride 4), so the tokenizer's grid is that backbone's.
"""

import dataclasses
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from convergent.backbones.pretrained import from_pretrained
from convergent.backbones.protocol import ImageBackbone
from convergent.heads.conv_decoder import ConvDecoder
from convergent.layers.linear import Linear
from convergent.layers.quantize import VectorQuantizer
from convergent.rundir import RunDir
from convergent.tasks.base import Task
from convergent.tasks.configs import VQVAEConfig

CONFIG_FILE, HEADS_FILE, ENCODER_DIR = "vqvae.json", "heads.safetensors", "encoder"
"""The files of an image tokenizer directory (:meth:`VQVAE.save_pretrained`)."""


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

    def save_extras(self, run: RunDir) -> None:
        """The run's image tokenizer: ``RUN/image_tokenizer/``."""
        self.save_pretrained(run.image_tokenizer)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the tokenizer into directory ``path`` (see the module docstring)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(path / ENCODER_DIR)
        heads = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items() if not k.startswith("backbone.")}
        save_file(heads, str(path / HEADS_FILE))
        (path / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(self.config), indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "VQVAE":
        """The tokenizer saved in ``path`` (an ``image_tokenizer/`` directory, or a vqvae run
        directory holding one), in eval mode."""
        path = Path(path)
        if not (path / CONFIG_FILE).is_file() and (path / RunDir.IMAGE_TOKENIZER / CONFIG_FILE).is_file():
            path = path / RunDir.IMAGE_TOKENIZER
        missing = [f for f in (CONFIG_FILE, HEADS_FILE, ENCODER_DIR) if not (path / f).exists()]
        if missing:
            raise FileNotFoundError(f"{path}: not an image tokenizer (missing {missing}); expected the "
                                    f"{RunDir.IMAGE_TOKENIZER}/ directory of a vqvae run, or the run directory")  # fmt: skip
        try:
            config = VQVAEConfig(**json.loads((path / CONFIG_FILE).read_text()))
        except TypeError as e:
            raise ValueError(f"{path / CONFIG_FILE}: not a vqvae config ({e})") from None
        task = cls(from_pretrained(path / ENCODER_DIR), config)
        heads = load_file(str(path / HEADS_FILE))
        expected = {k for k in task.state_dict() if not k.startswith("backbone.")}
        if set(heads) != expected:
            raise ValueError(f"{path / HEADS_FILE}: keys differ from a vqvae's (missing "
                             f"{sorted(expected - set(heads))}, unexpected {sorted(set(heads) - expected)})")  # fmt: skip
        task.load_state_dict(heads, strict=False)
        return task.eval()
