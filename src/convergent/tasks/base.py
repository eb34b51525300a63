"""The Task contract.

A task is an ``nn.Module`` built from a backbone and its config. ``forward(batch)`` takes a
dict batch (the keys in ``batch_keys``, and those in ``optional_batch_keys`` when there) and
returns a dict with ``"loss"`` (scalar) plus named terms for logging. A task checks the
backbone capabilities it needs when it is built (``modality``, ``requires``), so a bad
pairing fails at once with a clear message; it asks the backbone's declared protocol
(``convergent.backbones.protocol``), never its config. EMA teachers belong to the task and
are updated in :meth:`Task.on_step_end`.
"""

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from convergent.backbones.configs import vocabulary_overrides
from convergent.backbones.protocol import Backbone
from convergent.backbones.registry import backbone_config
from convergent.losses.contrastive import world
from convergent.rundir import RunDir


class Task(nn.Module):
    """Base class for objectives."""

    name: ClassVar[str] = "task"
    batch_keys: ClassVar[tuple[str, ...]] = ("image",)
    """Keys ``forward`` reads from a batch; the data pipeline must produce them (the Trainer
    checks them against the dataset's before any step)."""
    optional_batch_keys: ClassVar[tuple[str, ...]] = ()
    """Further keys ``forward`` reads when a batch holds them (not required of the data)."""
    requires: ClassVar[tuple[str, ...]] = ()
    """Backbone capability flags needed, e.g. ``("supports_mask_token",)``."""
    modality: ClassVar[str | None] = None
    """The backbone modality the task works with: ``"image"``, ``"text"`` or None (any)."""
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

    def save_extras(self, run: RunDir) -> None:
        """Save what the task adds to a finished run beside its encoder (the run's end calls
        it on rank 0). Default: nothing; the VQ-VAE saves its image tokenizer."""

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


def configure_text_tower(config: Any, vocab: dict) -> None:
    """``Task.configure_text`` of a task that builds a text backbone of its own (``config``'s
    ``text_backbone`` with ``text_overrides``: CLIP's text tower, the captioner's decoder): it
    takes the tokenizer's vocabulary and ids; explicit ``text_overrides`` win."""
    found = vocabulary_overrides(backbone_config(config.text_backbone), vocab)
    config.text_overrides = {**found, **(config.text_overrides or {})}


def backbone_problems(task_cls: type, backbone: Backbone) -> list[str]:
    """What ``backbone`` lacks for ``task_cls``, by declared capability (empty: it fits)."""
    problems = []
    if task_cls.modality is not None and backbone.modality != task_cls.modality:
        article = "an" if task_cls.modality[0] in "aeiou" else "a"
        problems.append(f"{article} {task_cls.modality} backbone ({type(backbone).__name__} reads {backbone.modality})")
    missing = [flag for flag in task_cls.requires if not getattr(backbone, flag)]  # declared flags
    if missing:
        names = ", ".join(f.removeprefix("supports_") for f in missing)
        problems.append(f"a backbone with {names} ({type(backbone).__name__} has none)")
    return problems


def check_backbone(task_cls: type, backbone: Backbone) -> None:
    """Raise a clear error when ``backbone`` lacks what ``task_cls`` needs."""
    problems = backbone_problems(task_cls, backbone)
    if problems:
        raise ValueError(f"task {task_cls.name!r} needs {' and '.join(problems)}")


def two_views(batch: dict, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch["image"]`` and ``batch["image2"]`` of a two-view task named ``task``, checked: both
    present (the Trainer draws the second with the transform) and of one shape."""
    missing = [k for k in ("image", "image2") if k not in batch]
    if missing:
        raise KeyError(
            f"{task} reads two views, batch['image'] and batch['image2'], but the batch lacks {missing}: the "
            "Trainer makes 'image2' by applying the transform a second time (fit(..., transform=...))"
        )
    x1, x2 = batch["image"], batch["image2"]
    if x1.shape != x2.shape:
        raise ValueError(f"the two views differ in shape: {tuple(x1.shape)} and {tuple(x2.shape)}")
    return x1, x2


@torch.no_grad()
def top1_accuracy(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Fraction of queries ``(B, D)`` whose most similar key (cosine) is their own (row ``i``)."""
    sim = F.normalize(q.float(), dim=1) @ F.normalize(k.float(), dim=1).T  # (B, B)
    return (sim.argmax(dim=1) == torch.arange(q.shape[0], device=q.device)).float().mean()


def check_sync_bn(task: str, sync_bn: bool, training: bool, x: torch.Tensor) -> None:
    """SyncBatchNorm needs GPUs: refuse ``task.<task>.sync_bn`` when training on several CPU processes."""
    if training and sync_bn and world()[1] > 1 and x.device.type == "cpu":
        raise ValueError(
            f"task.{task}.sync_bn uses SyncBatchNorm, which needs GPUs; for several CPU processes set "
            f"task.{task}.sync_bn false (BatchNorm per process)"
        )
