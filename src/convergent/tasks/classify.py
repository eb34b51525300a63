"""Supervised classification, the fine-tuning objective of MAE / SimMIM / BEiT (and BERT's
sentence classification): the backbone's final tokens are pooled (``ClassifyConfig.pooling``),
a dropout + linear head gives logits, and the loss is cross-entropy with label smoothing.

Any backbone: the batch holds the backbone's input (``backbone.input_key``: a transformed
``"image"``, or ``"input_ids"``), its optional keyword inputs (text: ``"attention_mask"``,
``"token_type_ids"``) and ``"label"``. Average pooling of text runs over the real tokens only
(``attention_mask``), so padding does not change a sample's logits.
"""

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from convergent.backbones.protocol import backbone_inputs
from convergent.heads.classifier import ClassifierHead, check_pooling, pool_tokens
from convergent.tasks.base import Task
from convergent.tasks.configs import ClassifyConfig


class Classify(Task):
    """Backbone + :class:`ClassifierHead`; ``forward(batch) -> {"loss", "acc"}``."""

    name: ClassVar[str] = "classify"
    batch_keys = ("image", "label")
    """For image backbones; an instance reads ``(backbone.input_key, "label")``."""

    def __init__(self, backbone: nn.Module, config: ClassifyConfig):
        super().__init__(backbone, config)
        check_pooling(backbone, config.pooling, "ClassifyConfig.pooling")
        if not 0.0 <= config.label_smoothing < 1.0:
            raise ValueError(f"ClassifyConfig.label_smoothing must be in [0, 1), got {config.label_smoothing}")
        self.batch_keys = (backbone.input_key, "label")
        self.head = ClassifierHead(backbone.num_features, config.num_classes, config.head_dropout, config.head_init_std)

    def predict(self, inputs: dict[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of a batch dict (the backbone's entries are picked by
        :func:`~convergent.backbones.protocol.backbone_inputs`), or of the backbone's input
        tensor alone (transformed images ``(B, C, H, W)``; unpadded token ids ``(B, L)``)."""
        x, kwargs = backbone_inputs(self.backbone, inputs) if isinstance(inputs, dict) else (inputs, {})
        tokens = self.backbone.forward_features(x, **kwargs)  # (B, P + N, C)
        return self.head(pool_tokens(self.backbone, tokens, self.config.pooling, kwargs.get("attention_mask")))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labels = batch["label"].long()  # (B,)
        logits = self.predict(batch)  # (B, K)
        if labels.shape != logits.shape[:1]:
            raise ValueError(f"labels of shape {tuple(labels.shape)} for {logits.shape[0]} samples")
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.config.label_smoothing)
        acc = (logits.detach().argmax(dim=-1) == labels).float().mean()
        return {"loss": loss, "acc": acc}
