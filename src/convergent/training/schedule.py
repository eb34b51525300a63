"""Learning-rate schedule: linear warm-up, then cosine decay to ``min_lr``, per optimizer step."""

import math

import torch


class CosineWarmup:
    """Sets ``group["lr"] = lr(t) * group["lr_scale"]`` for every optimizer group.

    With ``t`` the number of optimizer steps taken so far plus one (the step about to run):

    * warm-up, ``t <= warmup_steps``: ``lr(t) = base_lr * t / warmup_steps`` (a line from 0
      that reaches ``base_lr`` on the last warm-up step);
    * then ``lr(t) = min_lr + (base_lr - min_lr) * (1 + cos(pi * p)) / 2`` with
      ``p = (t - warmup_steps) / (max_steps - warmup_steps)``, so the final step runs at
      ``min_lr``.

    Call :meth:`step` after each optimizer step. The learning rate of the first step is set
    on construction.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, warmup_steps: int, max_steps: int, base_lr: float, min_lr: float
    ):
        if warmup_steps < 0 or max_steps < 1:
            raise ValueError(f"need warmup_steps >= 0 and max_steps >= 1, got {warmup_steps} and {max_steps}")
        self.optimizer = optimizer
        self.warmup_steps = int(warmup_steps)
        self.max_steps = int(max_steps)
        self.base_lr = float(base_lr)
        self.min_lr = float(min_lr)
        self.steps_done = 0
        self._apply()

    def lr_at(self, steps_done: int) -> float:
        """Unscaled learning rate of the optimizer step that follows ``steps_done`` steps."""
        t = steps_done + 1
        if t <= self.warmup_steps:
            return self.base_lr * t / self.warmup_steps
        if self.max_steps <= self.warmup_steps:
            return self.base_lr
        p = min(1.0, (t - self.warmup_steps) / (self.max_steps - self.warmup_steps))
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * p))

    @property
    def lr(self) -> float:
        """Unscaled learning rate of the next optimizer step."""
        return self.lr_at(self.steps_done)

    def step(self) -> None:
        """Advance by one optimizer step."""
        self.steps_done += 1
        self._apply()

    def _apply(self) -> None:
        lr = self.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def state_dict(self) -> dict:
        return {"steps_done": self.steps_done}

    def load_state_dict(self, state: dict) -> None:
        """Restore the position; warm-up, length and rates come from the constructor, so a
        resumed run may change ``max_steps`` (e.g. to train longer)."""
        self.steps_done = int(state["steps_done"])
        self._apply()
