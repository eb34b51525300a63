"""The Task contract.

A task is an ``nn.Module`` built from a backbone and its config. ``forward(batch)`` takes a
dict batch (keys in ``batch_keys``; those in ``optional_batch_keys`` only when there) and returns a dict with ``"loss"`` (scalar) plus named
terms for logging. A task checks the backbone capabilities it needs when it is built
(``requires``), so a bad pairing fails at once with a clear message. EMA teachers belong to
the task and are updated in :meth:`Task.on_step_end`.
"""

from typing import Any, ClassVar

import torch
from torch import nn


class Task(nn.Module):
    """Base class for objectives."""

    name: ClassVar[str] = "task"
    batch_keys: ClassVar[tuple[str, ...]] = ("image",)
    """Keys ``forward`` reads from a batch; the data pipeline must produce them (the Trainer
    checks them against the dataset's before any step)."""
    optional_batch_keys: ClassVar[tuple[str, ...]] = ()
    """Those of :attr:`batch_keys` that ``forward`` reads only when a batch holds them."""
    requires: ClassVar[tuple[str, ...]] = ()
    """Backbone capability flags needed, e.g. ``("supports_mask_token",)``."""
    families: ClassVar[tuple[str, ...] | None] = None
    """Backbone families the task works with (None: any)."""
    num_views: ClassVar[int] = 1
    """Augmented views of each image the Trainer draws (``image``, ``image2``, ...; MoCo v3: 2)."""
    reconstructs: ClassVar[bool] = False
    """``forward(batch, return_outputs=True)`` adds ``"prediction"`` (pixels, in the input's
    normalised space) and ``"mask_pixels"`` (B, 1, H, W), for reconstruction pictures."""

    def __init__(self, backbone: nn.Module, config: Any):
        super().__init__()
        check_backbone(type(self), backbone)
        self.backbone = backbone
        self.config = config

    @classmethod
    def configure_text(cls, config: Any, vocab: dict) -> None:
        """Fill in the fields of ``config`` that the run's tokenizer decides, for a task that
        embeds text beside its backbone (a text tower, its own word embeddings). ``vocab``:
        ``vocab_size``, ``pad_token_id``, ``mask_token_id``, ``max_length``. Default: nothing."""

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def on_step_end(self, step: int, max_steps: int) -> None:
        """Called after each optimizer step (EMA teachers update here)."""

    def no_weight_decay(self) -> set[str]:
        """Parameter names (as in ``named_parameters`` of the task) without weight decay:
        the backbone's declaration, prefixed, plus 1-d parameters of the heads."""
        names = {f"backbone.{n}" for n in self.backbone.no_weight_decay()}
        names |= {n for n, p in self.named_parameters() if not n.startswith("backbone.") and p.ndim <= 1}
        return names

    def layer_id(self, name: str) -> int:
        """Layer-decay id of a task parameter: the backbone's ids; heads get the top id."""
        if name.startswith("backbone."):
            return self.backbone.layer_id(name[len("backbone.") :])
        return self.backbone.num_layers - 1


def check_backbone(task_cls: type, backbone: nn.Module) -> None:
    """Raise a clear error when ``backbone`` lacks what ``task_cls`` needs."""
    family = getattr(getattr(backbone, "config", None), "family", type(backbone).__name__)
    if task_cls.families is not None and family not in task_cls.families:
        raise ValueError(
            f"task {task_cls.name!r} works with {', '.join(task_cls.families)} backbones, not {family!r}"
        )
    missing = [flag for flag in task_cls.requires if not getattr(backbone, flag, False)]
    if missing:
        raise ValueError(
            f"task {task_cls.name!r} needs a backbone with {', '.join(f.removeprefix('supports_') for f in missing)}; "
            f"{type(backbone).__name__} ({family}) does not provide it"
        )
