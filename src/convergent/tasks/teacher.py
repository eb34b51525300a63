"""EMA teachers: a frozen copy of the student updated by an exponential moving average
(MoCo v3 momentum encoder, data2vec teacher, EMA weights), and the momentum schedules.

The teacher belongs to the task (see :mod:`convergent.tasks.base`), so this module lives
with the tasks; ``convergent.training.ema`` re-exports it.
"""

import math
from collections.abc import Collection
from copy import deepcopy

import torch
from torch import nn


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` in eval mode whose parameters do not require gradients
    (so the optimizer leaves them out)."""
    teacher = deepcopy(module).eval()
    teacher.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update_(target: nn.Module, source: nn.Module, momentum: float, copy: Collection[str] = ()) -> None:
    """In place: ``t = momentum * t + (1 - momentum) * s`` for every parameter of ``target``
    and the same-named parameter of ``source``; buffers, and the parameters named in ``copy``,
    are copied from ``source`` (shared with it, as fairseq's EMA ``skip_keys``).

    Raises a ``KeyError`` naming the differences when the two modules' names differ.
    """
    t_params, s_params = dict(target.named_parameters()), dict(source.named_parameters())
    _check_names("parameters", t_params, s_params)
    copy = set(copy)
    for name in copy:
        t_params[name].data.copy_(s_params[name].data)
    names = [n for n in t_params if n not in copy]
    if names:
        t = [t_params[n].data for n in names]
        s = [s_params[n].data.to(t_params[n].dtype) for n in names]
        torch._foreach_mul_(t, momentum)
        torch._foreach_add_(t, s, alpha=1.0 - momentum)
    t_bufs, s_bufs = dict(target.named_buffers()), dict(source.named_buffers())
    _check_names("buffers", t_bufs, s_bufs)
    for name, buf in t_bufs.items():
        buf.copy_(s_bufs[name])


def cosine_momentum(step: int, max_steps: int, base: float, final: float = 1.0) -> float:
    """Momentum rising from ``base`` (step 0) to ``final`` (step ``max_steps``) on a half
    cosine (BYOL / MoCo v3 / DINO): ``final - (final - base) * (1 + cos(pi * step / max_steps)) / 2``."""
    if max_steps <= 0:
        return final
    p = min(max(step / max_steps, 0.0), 1.0)
    return final - (final - base) * 0.5 * (1.0 + math.cos(math.pi * p))


def linear_momentum(step: int, end_step: int, base: float, final: float) -> float:
    """Momentum rising linearly from ``base`` (step 0) to ``final`` (step ``end_step``), then
    constant (data2vec, Baevski et al. 2022, sec. 3.3; fairseq ``get_annealed_rate``):
    ``final - (final - base) * (1 - step / end_step)``."""
    if end_step <= 0 or step >= end_step:
        return final
    return final - (final - base) * (1.0 - max(step, 0) / end_step)


def _check_names(kind: str, target: dict, source: dict) -> None:
    if target.keys() != source.keys():
        missing, extra = sorted(target.keys() - source.keys()), sorted(source.keys() - target.keys())
        raise KeyError(
            f"EMA {kind} do not match: missing in source {missing or 'none'}; only in source {extra or 'none'}"
        )
