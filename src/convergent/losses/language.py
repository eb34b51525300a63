"""Token-level cross-entropy for language modelling (pure torch), shared by masked and causal
LM: the mean over the predicted tokens, where labels equal to ``ignore_index`` (-100, the HF
convention) do not count.
"""

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def token_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-entropy, accuracy and count over the predicted tokens.

    Args:
        logits: ``(..., V)`` scores (computed in float32 here, whatever their dtype).
        labels: ``(...)`` target ids; ``ignore_index`` where nothing is predicted.
        label_smoothing: as ``F.cross_entropy``.
        ignore_index: the label value that is skipped.

    Returns:
        ``loss``: mean cross-entropy over the counted tokens (HF ``CrossEntropyLoss()`` on the
        same labels), 0 (with a graph) when none count instead of NaN;
        ``accuracy``: fraction of counted tokens whose argmax is the label (detached);
        ``count``: number of counted tokens, a float tensor.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)} (expected (..., V))")
    flat, target = logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1)  # (M, V), (M,)
    counted = target != ignore_index
    count = counted.sum().float()
    denom = count.clamp_min(1.0)
    total = F.cross_entropy(
        flat, target, ignore_index=ignore_index, reduction="sum", label_smoothing=label_smoothing
    )
    correct = ((flat.detach().argmax(dim=-1) == target) & counted).sum()
    return total / denom, correct.float() / denom, count
