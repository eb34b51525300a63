"""CLIP (Radford et al., 2021): contrastive image–text pre-training with two towers.

The image tower is the task's ``backbone`` (any image backbone: ViT, Swin); the text tower
is a second backbone reading token ids, built from ``CLIPConfig.text_backbone`` /
``text_overrides`` (or passed in as ``text_backbone=``). Each tower's final tokens are pooled
(``image_pooling``, ``text_pooling``), projected by a bias-free linear map into the joint
space of width ``embed_dim`` and L2-normalised; the cosine similarities times a learned
logit scale ``exp(s)`` (``s`` starts at ``log(1/0.07)``, ``exp(s)`` clamped at 100) are the
logits of :func:`~convergent.losses.contrastive.clip_loss`, the symmetric InfoNCE.

SigLIP (Zhai, Mustafa, Kolesnikov, Beyer, 2023, "Sigmoid Loss for Language Image
Pre-Training") is the same two towers with ``loss: sigmoid``: the logits ``t · x·y + b``, with
a learned bias ``b`` (``logit_bias``, starting at ``init_bias`` −10) and ``t`` starting at 10
(``init_temperature`` 0.1), go into :func:`~convergent.losses.contrastive.siglip_loss`, a
binary logistic loss on every image–text pair; under DDP the texts travel around a ring of
processes in chunks instead of being gathered (the paper's chunked implementation, Sec. 3.3).
The paper's towers (ViT image tower with MAP pooling, bidirectional text tower with the
last token) are a matter of backbone and pooling options, not of the loss.

Choices (HF = transformers ``CLIPModel``, which ``convergent.converters.hf_clip`` converts):

* text pooling 'eos' takes the last real token (``attention_mask``), where CLIP's tokenizer
  writes the end-of-text token: HF's rule (the first ``eos_token_id``) for right-padded
  batches that end each text with it, without the task knowing the tokenizer's ids. In a
  causal tower it is the only token that has seen the whole text.
* ViT's default pooling is the class token after the final norm: HF's ``post_layernorm`` of
  the class token (LayerNorm is per token).
* the clamp acts in the forward (no gradient above the bound), as Swin V2's attention
  logit scale, instead of open_clip's in-place clamp after each optimizer step.
* distributed: in training mode, when a process group is initialised, features of all
  processes are gathered with gradient and the loss covers the global batch, so W processes
  × B pairs train exactly as one process with W·B (tested); ``local_loss`` scores only the
  local rows. In eval mode each process scores its own batch (an evaluation may run on one
  process alone, and a gather would wait for the others forever). The 'sigmoid' loss
  exchanges text chunks instead (tested the same way); its logged accuracies are over the
  local batch.
* the logit bias exists only with the 'sigmoid' loss, so a 'softmax' CLIP's state dict is
  CLIP's (the HF converter's).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from convergent.backbones.protocol import backbone_inputs
from convergent.backbones.registry import build_backbone
from convergent.choices import CLIP_LOSSES
from convergent.heads.classifier import check_pooling, pool_tokens
from convergent.layers.linear import Linear
from convergent.losses.contrastive import clip_loss, siglip_loss
from convergent.tasks.base import Task, configure_text_tower
from convergent.tasks.configs import CLIPConfig


class CLIP(Task):
    """Two-tower contrastive image–text model.

    ``forward(batch)`` reads ``batch["image"]`` ``(B, C, H, W)``, ``batch["input_ids"]``
    ``(B, L)`` and ``batch["attention_mask"]`` ``(B, L)`` (1 = real token; right padding);
    pair ``i`` is ``(image[i], text[i])``. Returns ``{"loss", "logit_scale", "acc_i2t",
    "acc_t2i"}``: the loss, ``exp(s)`` after the clamp, and the in-batch top-1 accuracy of
    retrieving each image's text and each text's image (over the gathered batch under DDP).
    With ``return_outputs=True`` also ``"image_embeds"``, ``"text_embeds"`` (local, normalised,
    ``(B, embed_dim)``) and ``"logits_per_image"``.

    Args:
        backbone: the image tower.
        config: :class:`~convergent.tasks.configs.CLIPConfig`.
        text_backbone: an already built text tower; None builds ``config.text_backbone``
            with ``config.text_overrides``.
    """

    name = "clip"
    batch_keys = ("image", "input_ids", "attention_mask")
    modality = "image"

    @classmethod
    def configure_text(cls, config: CLIPConfig, vocab: dict) -> None:
        """The text tower takes the tokenizer's vocabulary and ids; explicit ``text_overrides`` win."""
        configure_text_tower(config, vocab)

    def __init__(self, backbone: nn.Module, config: CLIPConfig, text_backbone: nn.Module | None = None):
        super().__init__(backbone, config)
        _check_config(config, backbone)
        if text_backbone is None:
            text_backbone = build_backbone(config.text_backbone, **config.text_overrides)
        if text_backbone.modality != "text":
            raise ValueError(
                f"CLIP's text tower must be a text backbone; {type(text_backbone).__name__} reads "
                f"{text_backbone.modality}s"
            )
        check_pooling(text_backbone, config.text_pooling, "CLIPConfig.text_pooling")
        self.text_backbone = text_backbone
        self.image_proj = Linear(backbone.num_features, config.embed_dim, bias=False)
        self.text_proj = Linear(text_backbone.num_features, config.embed_dim, bias=False)
        # HF / open_clip init: std = width^-0.5, so projected features start at unit scale
        nn.init.normal_(self.image_proj.weight, std=backbone.num_features**-0.5)
        nn.init.normal_(self.text_proj.weight, std=text_backbone.num_features**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(init_log_scale(config)))
        self.max_log_scale = math.log(config.max_logit_scale)
        if config.loss == "sigmoid":  # SigLIP's learned bias b of the logits t·x·y + b
            self.logit_bias = nn.Parameter(torch.tensor(float(config.init_bias)))

    # --- embeddings ---------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` → L2-normalised embeddings ``(B, embed_dim)``, float32."""
        tokens = self.backbone.forward_features(images)  # (B, P + N, C)
        pooled = pool_tokens(self.backbone, tokens, self.config.image_pooling)  # (B, C)
        return F.normalize(self.image_proj(pooled).float(), dim=-1)

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor:
        """Token ids ``(B, L)`` (+ ``attention_mask`` ``(B, L)``, other keyword inputs of the
        text backbone) → L2-normalised embeddings ``(B, embed_dim)``, float32. Padded tokens
        are skipped where the tower can (``supports_unpad``): every pooling reads real tokens only."""
        if self.text_backbone.supports_unpad:
            kwargs.setdefault("unpad", True)
        tokens = self.text_backbone.forward_features(input_ids, attention_mask=attention_mask, **kwargs)
        pooled = pool_tokens(self.text_backbone, tokens, self.config.text_pooling, attention_mask)  # (B, C)
        return F.normalize(self.text_proj(pooled).float(), dim=-1)

    def scale(self) -> torch.Tensor:
        """The logit scale ``exp(min(s, log max_logit_scale))``, a 0-d tensor."""
        return self.logit_scale.clamp(max=self.max_log_scale).exp()

    # --- training -----------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor], return_outputs: bool = False) -> dict[str, torch.Tensor]:
        ids, kwargs = backbone_inputs(self.text_backbone, batch)
        if batch["image"].shape[0] != ids.shape[0]:
            raise ValueError(f"{batch['image'].shape[0]} images but {ids.shape[0]} texts; CLIP needs pairs")
        image = self.encode_image(batch["image"])  # (B, E)
        text = self.encode_text(ids, **kwargs)  # (B, E)
        scale = self.scale()
        if self.config.loss == "sigmoid":
            loss = siglip_loss(image, text, scale, self.logit_bias, distributed=self.training)
            logits_per_image = scale * image @ text.T + self.logit_bias  # (B, B): the local batch
            logits_per_text, labels = logits_per_image.T, torch.arange(image.shape[0], device=image.device)
        else:
            out = clip_loss(image, text, scale, local_loss=self.config.local_loss, distributed=self.training)
            loss, logits_per_image, logits_per_text, labels = out
        result = {
            "loss": loss,
            "logit_scale": scale.detach(),
            "acc_i2t": (logits_per_image.detach().argmax(dim=-1) == labels).float().mean(),
            "acc_t2i": (logits_per_text.detach().argmax(dim=-1) == labels).float().mean(),
        }
        if self.config.loss == "sigmoid":
            result["logit_bias"] = self.logit_bias.detach().clone()
        if return_outputs:
            result.update(image_embeds=image, text_embeds=text, logits_per_image=logits_per_image)
        return result

    # --- optimizer metadata -------------------------------------------------------------------
    def no_weight_decay(self) -> set[str]:
        """Both towers' declarations, the heads' 1-d parameters and the logit scale."""
        names = super().no_weight_decay()
        return names | {f"text_backbone.{n}" for n in self.text_backbone.no_weight_decay()}

    def layer_id(self, name: str) -> int:
        """Image tower and heads as :meth:`Task.layer_id`; a text-tower parameter gets its
        relative depth mapped onto the image tower's scale (embeddings 0, top block top)."""
        if not name.startswith("text_backbone."):
            return super().layer_id(name)
        text_id = self.text_backbone.layer_id(name[len("text_backbone.") :])
        top, text_top = self.backbone.num_layers - 1, self.text_backbone.num_layers - 1
        return round(text_id * top / max(text_top, 1))


INIT_TEMPERATURE = {"softmax": 0.07, "sigmoid": 0.1}
"""The papers' initial temperatures: CLIP 0.07; SigLIP t = exp(t'), t' = log 10."""


def init_log_scale(config: CLIPConfig) -> float:
    """The learned log logit scale's start, ``log(1 / init_temperature)`` (None: the loss's paper value)."""
    temperature = config.init_temperature or INIT_TEMPERATURE[config.loss]
    return math.log(1.0 / temperature)


def _check_config(config: CLIPConfig, backbone: nn.Module) -> None:
    check_pooling(backbone, config.image_pooling, "CLIPConfig.image_pooling")
    if config.embed_dim < 1:
        raise ValueError(f"CLIPConfig.embed_dim must be >= 1, got {config.embed_dim}")
    if config.loss not in CLIP_LOSSES:
        raise ValueError(f"CLIPConfig.loss must be one of {', '.join(CLIP_LOSSES)}, got {config.loss!r}")
    if config.loss == "sigmoid" and config.local_loss:
        raise ValueError("CLIPConfig.local_loss is an option of the 'softmax' loss; 'sigmoid' is always local")
    t = config.init_temperature
    if not ((t is None or t > 0) and math.log(config.max_logit_scale) >= init_log_scale(config)):
        raise ValueError(
            "CLIPConfig needs init_temperature > 0 and max_logit_scale >= 1 / init_temperature, got "
            f"{config.init_temperature} and {config.max_logit_scale}"
        )
