"""What the Trainer calls back during ``fit``: subclass :class:`Callback` and override the hooks
you need (the defaults do nothing)."""

from typing import Any

from torch import nn


class Callback:
    """Hooks the Trainer calls on rank-local state; override any of them."""

    def on_step_end(self, trainer: Any, task: nn.Module, step: int, metrics: dict) -> None:
        """After optimizer step ``step`` (1-based); ``metrics`` are the step's logged values
        (empty between log steps). ``task`` is the trained (possibly sharded) copy."""

    def on_fit_end(self, trainer: Any, task: nn.Module) -> None:
        """After the last step and the final checkpoint; ``task`` holds the full weights."""
