"""What one training step costs: its floating-point operations, counted by
``torch.utils.flop_counter.FlopCounterMode``, and its time.

The count is one forward and backward pass of the task on a batch: matrix multiplications,
convolutions and attention (the operations ``FlopCounterMode`` knows; element-wise ops,
normalisation and the optimizer update are not counted), 2 FLOPs per multiply-add. A run's
training FLOPs are this count times its steps (the batch, and so the count, is the same every
step).
"""

import copy
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from convergent.tasks.base import Task
from convergent.training.rng import capture_rng, restore_rng


@dataclass(frozen=True)
class StepCost:
    """One training step of a task at one batch size."""

    flops: int
    """FLOPs of the forward and backward pass (``FlopCounterMode``)."""
    step_s: float
    """Seconds per optimizer step (forward, backward, AdamW update), the fastest of the timed steps."""
    forward_s: float
    """Seconds of one forward pass without gradients (evaluation)."""


def train_step_flops(task: Task, batch: dict) -> int:
    """FLOPs of one forward and backward pass of ``task`` on ``batch`` (training mode); the
    gradients it leaves are cleared."""
    flops = _counted(task, batch)
    task.zero_grad(set_to_none=True)
    return flops


def meta_step_flops(task: nn.Module, batch: dict) -> int:
    """:func:`train_step_flops` on a meta-device copy of ``task`` with a batch shaped like
    ``batch``: nothing is computed, and the task, its buffers and every global RNG are left as
    they were. It also counts attention, which the count of a real CPU step misses (the CPU's
    fused attention kernel is not counted; on the meta device attention runs as matrix
    products). Raises if the task cannot run on the meta device (a data-dependent branch)."""
    state = capture_rng()
    try:
        shadow = copy.deepcopy(task, memo=_meta_memo(task))  # no real copy of the weights is made
        fake = {k: torch.empty_like(v, device="meta") if torch.is_tensor(v) else v for k, v in batch.items()}
        return _counted(shadow, fake)
    finally:
        restore_rng(state)


def _counted(task: nn.Module, batch: dict) -> int:
    task.train()
    with FlopCounterMode(display=False) as counter:
        task(batch)["loss"].backward()
    return int(counter.get_total_flops())


def _meta_memo(task: nn.Module) -> dict:
    """A ``deepcopy`` memo that maps every parameter and buffer of ``task`` to a meta tensor."""
    memo = {}
    for p in task.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in task.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return memo


def measure_step(task: Task, batch: dict, timed_steps: int = 3) -> StepCost:
    """FLOPs and time of a training step of ``task`` on ``batch``. The task is trained for
    ``1 + timed_steps`` steps (a warm-up, then the timed ones) with AdamW: measure a copy that
    is thrown away, never a model that is used afterwards."""
    flops = train_step_flops(task, batch)
    device = next(task.parameters()).device
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-4)
    times = []
    for _ in range(1 + timed_steps):
        start = time.perf_counter()
        task(batch)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(_elapsed(start, device))
    task.eval()
    with torch.no_grad():
        start = time.perf_counter()
        task(batch)
        forward_s = _elapsed(start, device)
    return StepCost(flops, min(times[1:] or times), forward_s)


def _elapsed(start: float, device: torch.device) -> float:
    """Seconds since ``start`` once the device's queued work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start
