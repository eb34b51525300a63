"""When a run has diverged: the non-finite-step policy of the Trainer.

A step whose loss (or gradient norm) is not finite is skipped and counted
(``trainer.nonfinite='skip'``); the run is halted, with status ``failed``, when the skips say
it has diverged rather than met one bad batch:

* ``trainer.max_nonfinite_consecutive`` non-finite steps in a row (default 5), or
* more than ``trainer.max_nonfinite_fraction`` of the steps so far (default 25%), once the
  run has taken ``trainer.nonfinite_min_steps`` steps (default 10; before that one bad step
  is a large fraction, and the in-a-row limit covers a run that diverges at once).

``trainer.nonfinite='stop'`` halts at the first non-finite step instead. The counts are saved
in checkpoints, so a resumed run goes on counting where it stopped.
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributed.tensor import DTensor


@dataclass
class NonfiniteCount:
    """Non-finite steps of a run: in all and in a row up to the last step."""

    total: int = 0
    in_a_row: int = 0

    def add(self, nonfinite: bool) -> None:
        """Count one step."""
        self.total += int(nonfinite)
        self.in_a_row = self.in_a_row + 1 if nonfinite else 0


def check_policy(cfg) -> None:
    """A clear error for a ``TrainerConfig`` whose non-finite policy cannot work."""
    if cfg.nonfinite not in ("skip", "stop"):
        raise ValueError(f"trainer.nonfinite must be 'skip' or 'stop', not {cfg.nonfinite!r}")
    if cfg.max_nonfinite_consecutive < 0:
        raise ValueError(f"trainer.max_nonfinite_consecutive must be >= 0, not {cfg.max_nonfinite_consecutive}")
    if not 0.0 <= cfg.max_nonfinite_fraction <= 1.0:
        raise ValueError(f"trainer.max_nonfinite_fraction must be in [0, 1], not {cfg.max_nonfinite_fraction}")
    if cfg.nonfinite_min_steps < 0:
        raise ValueError(f"trainer.nonfinite_min_steps must be >= 0, not {cfg.nonfinite_min_steps}")


def divergence(count: NonfiniteCount, steps: int, cfg) -> str | None:
    """Why a run that has taken ``steps`` steps, ``count`` of them non-finite, is halted as
    diverged under the limits of ``cfg`` (a ``TrainerConfig``); None while it may go on."""
    seen = f"diverged: {count.total} of {steps} steps non-finite"
    limit = cfg.max_nonfinite_consecutive
    if limit and count.in_a_row >= limit:
        return f"{seen} ({count.in_a_row} in a row)"
    fraction = count.total / max(steps, 1)
    if steps >= cfg.nonfinite_min_steps and fraction > cfg.max_nonfinite_fraction:
        return f"{seen} ({fraction:.0%}, more than trainer.max_nonfinite_fraction={cfg.max_nonfinite_fraction:g})"
    return None


def weights_finite(module: nn.Module) -> bool:
    """Whether every parameter and buffer of ``module`` (this process's shard, under FSDP) is finite."""
    for t in (*module.parameters(), *module.buffers()):
        local = t.to_local() if isinstance(t, DTensor) else t  # FSDP: this process's shard
        if local.is_floating_point() and not torch.isfinite(local).all():
            return False
    return True
