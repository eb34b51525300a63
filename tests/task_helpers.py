"""Shared by the task tests: optimizer steps on one fixed batch."""

import torch
from torch import nn


def train_steps(
    task: nn.Module, batch: dict, steps: int, lr: float, max_steps: int | None = None
) -> tuple[list[float], dict]:
    """``steps`` AdamW steps of ``task`` on ``batch`` (trainable parameters only), each followed
    by ``task.on_step_end(step, max_steps)`` (EMA teachers; ``max_steps`` defaults to ``steps``).
    Returns the loss of every step and the last output; the last step's gradients stay."""
    opt = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=lr)
    losses = []
    for step in range(1, steps + 1):
        out = task(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        task.on_step_end(step, steps if max_steps is None else max_steps)
        losses.append(out["loss"].item())
    return losses, out
