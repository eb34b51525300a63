"""AdamW with parameter groups: no weight decay where the model declares it, and
layer-wise learning-rate decay (BEiT / SimMIM fine-tuning) from the model's layer ids.

The model declares (``no_weight_decay()``, ``layer_id(name)``, ``num_layers`` or
``backbone.num_layers``), the trainer decides.
"""

from typing import Any

import torch
from torch import nn

from convergent.config import OptimConfig


def param_groups(model: nn.Module, lr: float, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """Optimizer parameter groups of ``model``'s trainable parameters.

    * No weight decay for names in ``model.no_weight_decay()`` and for every parameter with
      ``ndim <= 1`` (biases, norm weights).
    * With ``layer_decay != 1``, parameter ``name`` gets the learning-rate scale
      ``layer_decay ** (num_layers - 1 - model.layer_id(name))``: the top layer trains at
      full rate, the embeddings at ``layer_decay ** (num_layers - 1)``.

    Each group carries ``"lr_scale"`` (read by :class:`~convergent.training.schedule.CosineWarmup`),
    ``"weight_decay"`` and ``"lr" = lr * lr_scale``. Frozen parameters are left out. Groups
    are ordered by (layer id, decay), so the order is the same every time for a given model.
    """
    no_decay = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    depth = _num_layers(model) if layer_decay != 1.0 else None
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim > 1 and name not in no_decay
        layer = model.layer_id(name) if depth is not None else 0
        scale = layer_decay ** (depth - 1 - layer) if depth is not None else 1.0
        group = groups.setdefault(
            (layer, decay),
            {"params": [], "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale, "lr": lr * scale},
        )
        group["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` of ``model`` from an ``OptimConfig`` (lr, weight_decay,
    layer_decay, betas). Uses the fused kernel where the parameters' device supports it."""
    groups = param_groups(model, cfg.lr, cfg.weight_decay, cfg.layer_decay)
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameters (all have requires_grad=False)")
    kwargs = {"lr": cfg.lr, "betas": tuple(cfg.betas)}
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # device or dtype without a fused kernel
        return torch.optim.AdamW(groups, **kwargs)


def _num_layers(model: nn.Module) -> int:
    """Layer-decay depth declared by the model (or its backbone)."""
    if hasattr(model, "num_layers"):
        return int(model.num_layers)
    backbone = getattr(model, "backbone", None)
    if backbone is not None and hasattr(backbone, "num_layers"):
        return int(backbone.num_layers)
    raise AttributeError(
        f"layer decay needs {type(model).__name__}.num_layers (or .backbone.num_layers) and .layer_id(name)"
    )
