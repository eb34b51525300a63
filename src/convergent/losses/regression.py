"""Feature regression losses (pure torch).

* :func:`masked_smooth_l1` — data2vec (Baevski et al., 2022, sec. 3.4): Smooth L1 with
  transition ``beta`` (``beta = 0``: squared error, as fairseq's ``loss_beta``), averaged over
  the feature dimension and the positions a mask selects.
* :func:`whitened_smooth_l1` — feature distillation (Wei et al., 2022): Smooth L1 with
  transition ``beta`` between predictions and targets whitened per token by a parameter-free
  LayerNorm, averaged over every element.
"""

import torch
import torch.nn.functional as F


def masked_smooth_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Smooth L1 between ``(B, N, D)`` predictions and targets at the positions ``mask`` ``(B, N)``
    selects.

    Per element, with ``e = pred - target``: ``0.5 e² / beta`` where ``|e| <= beta``, else
    ``|e| - 0.5 beta``; ``beta = 0`` gives ``e²`` (fairseq's convention; torch's own
    ``smooth_l1_loss`` would give ``|e|``). Computed in float32.

    Returns:
        scalar: mean over selected positions and the ``D`` dimensions (0 when none is selected).
        fairseq sums over ``D`` instead and scales by ``1/sqrt(D)`` (vision) or 1 (text): this
        is theirs divided by ``sqrt(D)`` or ``D``, a width-independent scale.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if mask.shape != pred.shape[:2]:
        raise ValueError(f"mask {tuple(mask.shape)} does not match positions {tuple(pred.shape[:2])}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    pred, target = pred.float(), target.float()
    if beta == 0:
        per = F.mse_loss(pred, target, reduction="none")
    else:
        per = F.smooth_l1_loss(pred, target, reduction="none", beta=beta)
    w = mask.to(per.dtype)
    return (per.mean(dim=-1) * w).sum() / w.sum().clamp_min(1.0)


def whitened_smooth_l1(
    pred: torch.Tensor, target: torch.Tensor, beta: float, eps: float = 1e-5, whiten: bool = True
) -> torch.Tensor:
    """Smooth L1 between predictions ``(..., D)`` and targets ``(..., D)`` normalised per
    position over ``D`` to zero mean and unit variance (a LayerNorm without weight and bias,
    epsilon ``eps``; ``whiten=False``: the targets as they are): the official feature
    distillation loss, ``SmoothL1Loss(beta)(pred, LayerNorm(D, elementwise_affine=False)(target))``.
    Elements as :func:`masked_smooth_l1` (``beta = 0``: squared error). Computed in float32.

    Returns:
        scalar: mean over every element.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    pred, target = pred.float(), target.float()
    if whiten:
        target = F.layer_norm(target, target.shape[-1:], eps=eps)
    if beta == 0:
        return F.mse_loss(pred, target)
    return F.smooth_l1_loss(pred, target, beta=beta)
