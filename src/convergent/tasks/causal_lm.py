"""Causal (left-to-right, GPT-style) language modelling: every position predicts the next
token, seeing only the tokens up to itself.

The same pieces as MLM (both are a :class:`~convergent.tasks.mlm.TiedLMTask`): a text
backbone built with ``causal=True`` (HF ``BertModel`` with ``is_decoder=True``),
:class:`~convergent.heads.lm_head.LMHead` tied to the input embedding,
:func:`~convergent.losses.language.token_cross_entropy`. Text is sampled from a trained task
with :func:`convergent.generation.generate`.
"""

import torch
from torch import nn

from convergent.backbones.protocol import backbone_inputs
from convergent.losses.language import IGNORE_INDEX, token_cross_entropy
from convergent.tasks.configs import CausalLMConfig
from convergent.tasks.mlm import TiedLMTask


class CausalLM(TiedLMTask):
    """Next-token prediction around a causal text backbone.

    ``forward(batch)`` reads ``batch["input_ids"]`` ``(B, L)`` and ``batch["attention_mask"]``
    ``(B, L)`` (1 = real token). Position ``t`` predicts token ``t + 1`` where both are real
    (so right padding and the first token after left padding are never targets). With
    ``batch["labels"]`` ``(B, L)`` (HF style: unshifted, -100 = ignore) those are the targets
    instead. Returns ``{"loss", "accuracy", "num_predictions"}``; with
    ``return_outputs=True`` also ``"logits"`` ``(B, L, V)``.
    """

    name = "causal-lm"
    requires = ("supports_causal",)

    def __init__(self, backbone: nn.Module, config: CausalLMConfig):
        super().__init__(backbone, config)
        if not backbone.is_causal:
            raise ValueError(
                f"task 'causal-lm' needs a backbone with causal (left-to-right) attention, but "
                f"{type(backbone).__name__} was built with causal=False, so every position would see the token "
                "it predicts; build it with causal=True"
            )
        if not 0.0 <= config.label_smoothing < 1.0:
            raise ValueError(f"CausalLMConfig.label_smoothing must be in [0, 1), got {config.label_smoothing}")

    @property
    def max_length(self) -> int:
        """Longest sequence the backbone takes (its learned positions)."""
        return self.backbone.max_length

    @property
    def pad_token_id(self) -> int:
        return self.backbone.pad_token_id

    def forward(self, batch: dict[str, torch.Tensor], return_outputs: bool = False) -> dict[str, torch.Tensor]:
        input_ids, kwargs = backbone_inputs(self.backbone, batch)  # (B, L)
        targets = self.targets(input_ids, batch)  # (B, L-1)
        tokens = self.backbone.forward_features(input_ids, **kwargs)  # (B, L, C)
        logits = self.logits(tokens if return_outputs else tokens[:, :-1])  # (B, L or L-1, V)
        loss, accuracy, count = token_cross_entropy(logits[:, : targets.shape[1]], targets, self.config.label_smoothing)
        out = {"loss": loss, "accuracy": accuracy, "num_predictions": count}
        if return_outputs:
            out["logits"] = logits
        return out

    def targets(self, input_ids: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(B, L-1)`` next-token targets of positions ``0..L-2``, -100 where not predicted."""
        labels = batch.get("labels")
        if labels is not None:
            if labels.shape != input_ids.shape:
                raise ValueError(f"labels {tuple(labels.shape)} do not match input_ids {tuple(input_ids.shape)}")
            return labels[:, 1:]
        real = batch.get("attention_mask")
        if real is None:
            return input_ids[:, 1:]
        real = real.bool()
        return input_ids[:, 1:].masked_fill(~(real[:, 1:] & real[:, :-1]), IGNORE_INDEX)

    def next_token_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, V)`` of the token after ``input_ids`` ``(B, L)`` (no padding)."""
        tokens = self.backbone.forward_features(input_ids)  # (B, L, C)
        return self.logits(tokens[:, -1])
