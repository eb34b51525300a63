"""Task registry. Torch-free: one line per task names its class lazily, so ``convergent list``
answers without importing torch.

    register_task("simmim", "convergent.tasks.simmim:SimMIM", SimMIMConfig, "SimMIM ...")

``build_task(name, backbone, config)`` imports the class only then.
"""

from dataclasses import dataclass
from typing import Any

from convergent.registry import Registry, load_target
from convergent.tasks.configs import (
    CausalLMConfig,
    ClassifyConfig,
    CLIPConfig,
    Data2VecConfig,
    MAEConfig,
    MLMConfig,
    MoCoV3Config,
    SimMIMConfig,
    ViLTConfig,
)


@dataclass(frozen=True)
class TaskEntry:
    name: str
    target: str
    """``"module:Class"`` of the task (an ``nn.Module``)."""
    config: type
    """The task's config dataclass."""
    description: str


_TASKS: Registry[TaskEntry] = Registry("task")


def register_task(name: str, target: str, config: type, description: str) -> None:
    _TASKS.add(name, TaskEntry(name, target, config, description))


register_task("simmim", "convergent.tasks.simmim:SimMIM", SimMIMConfig, "SimMIM: masked image modelling, L1 on masked pixels")
register_task("mae", "convergent.tasks.mae:MAE", MAEConfig, "MAE: encode visible patches, decode, MSE on masked patches")
register_task("classify", "convergent.tasks.classify:Classify", ClassifyConfig, "Classify: supervised fine-tuning, pooled tokens + linear head, label-smoothed cross-entropy")
register_task("mlm", "convergent.tasks.mlm:MLM", MLMConfig, "MLM: BERT masked language modelling (15 % of tokens, 80/10/10), cross-entropy on masked tokens")
register_task("causal-lm", "convergent.tasks.causal_lm:CausalLM", CausalLMConfig, "Causal LM: GPT-style next-token prediction with a causal text backbone")
register_task("data2vec", "convergent.tasks.data2vec:Data2Vec", Data2VecConfig, "data2vec: regress an EMA teacher's averaged top-K block outputs at masked positions (text, ViT, Swin)")
register_task("mocov3", "convergent.tasks.mocov3:MoCoV3", MoCoV3Config, "MoCo v3: two views, query encoder + predictor vs an EMA momentum encoder, symmetric InfoNCE (ViT, Swin)")
register_task("clip", "convergent.tasks.clip:CLIP", CLIPConfig, "CLIP: image and text towers projected into one space, symmetric InfoNCE over the global batch of pairs")
register_task("vilt", "convergent.tasks.vilt:ViLT", ViLTConfig, "ViLT: one Transformer over [text ; image patches], image-text matching with swapped images + MLM conditioned on the image")


def names() -> list[str]:
    """Registered task names, sorted."""
    return _TASKS.names()


def entry(name: str) -> TaskEntry:
    """The registry entry of ``name``; KeyError with close matches if unknown."""
    return _TASKS.get(name)


def describe(name: str) -> str:
    return entry(name).description


def task_class(name: str) -> type:
    """The class of task ``name`` (imports it, and torch)."""
    return load_target(entry(name).target)


def build_task(name: str, backbone: Any, config: Any = None):
    """The task ``name`` around ``backbone`` (config: its dataclass; default values if None)."""
    e = entry(name)
    return load_target(e.target)(backbone, config if config is not None else e.config())
