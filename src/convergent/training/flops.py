"""What one training step costs: its floating-point operations, counted by
``torch.utils.flop_counter.FlopCounterMode``, and its time.

The count is one forward and backward pass of the task on a batch: matrix multiplications,
convolutions and attention (the operations ``FlopCounterMode`` knows; element-wise ops,
normalisation and the optimizer update are not counted), 2 FLOPs per multiply-add. A run's
training FLOPs are this count times its steps (the batch, and so the count, is the same every
step).
"""

import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from convergent.tasks.base import Task


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
    task.train()
    with FlopCounterMode(display=False) as counter:
        task(batch)["loss"].backward()
    task.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


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
