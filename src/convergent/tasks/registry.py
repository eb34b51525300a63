"""Task registry. Torch-free: one line per task names its class lazily, so ``convergent list``
answers without importing torch.

    register_task("simmim", "convergent.tasks.simmim:SimMIM", SimMIMConfig, "SimMIM ...")

``build_task(name, backbone, config)`` imports the class only then.
"""

import difflib
import importlib
from dataclasses import dataclass
from typing import Any

from convergent.tasks.configs import ClassifyConfig, MAEConfig, SimMIMConfig


@dataclass(frozen=True)
class TaskEntry:
    name: str
    target: str
    """``"module:Class"`` of the task (an ``nn.Module``)."""
    config: type
    """The task's config dataclass."""
    description: str


_TASKS: dict[str, TaskEntry] = {}


def register_task(name: str, target: str, config: type, description: str) -> None:
    if name in _TASKS:
        raise ValueError(f"task {name!r} is registered twice")
    _TASKS[name] = TaskEntry(name, target, config, description)


register_task("simmim", "convergent.tasks.simmim:SimMIM", SimMIMConfig, "SimMIM: masked image modelling, L1 on masked pixels")
register_task("mae", "convergent.tasks.mae:MAE", MAEConfig, "MAE: encode visible patches, decode, MSE on masked patches")
register_task("classify", "convergent.tasks.classify:Classify", ClassifyConfig, "Classify: supervised fine-tuning, pooled tokens + linear head, label-smoothed cross-entropy")


def names() -> list[str]:
    """Registered task names, sorted."""
    return sorted(_TASKS)


def entry(name: str) -> TaskEntry:
    if name not in _TASKS:
        close = difflib.get_close_matches(name, _TASKS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown task {name!r}{hint} (see `convergent list tasks`)")
    return _TASKS[name]


def describe(name: str) -> str:
    return entry(name).description


def build_task(name: str, backbone: Any, config: Any = None):
    """The task ``name`` around ``backbone`` (config: its dataclass; default values if None)."""
    e = entry(name)
    module, cls = e.target.split(":")
    return getattr(importlib.import_module(module), cls)(backbone, config if config is not None else e.config())
