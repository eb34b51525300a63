"""``convergent pretrain``: data → backbone → task → trainer → saved encoder → evaluation.

The run directory holds the resolved ``config.yaml``, ``metrics.jsonl``, TensorBoard logs,
``checkpoints/``, the pre-trained ``encoder/`` (``save_pretrained``), ``reconstructions.png``,
``loss.png`` and ``summary.json``.
"""

import time
from pathlib import Path
from typing import Any

import yaml

from convergent.config import PretrainConfig, from_dict, from_namespace, to_dict
from convergent.tasks.configs import TokenMaskingConfig
from convergent.workflows.text import packed_training_set, prepare_text, tokenizer_vocab

CONFIG_FILE = "config.yaml"


def config_from_namespace(ns: Any) -> Any:
    """The typed :class:`PretrainConfig` from the CLI's parsed namespace."""
    return from_namespace(PretrainConfig, ns, "pretrain config")


def resume_config(run_dir: str | Path) -> Any:
    """The config a run directory was started with."""
    file = Path(run_dir) / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file}: not found; --resume expects a run directory of `convergent pretrain`")
    return from_dict(PretrainConfig, yaml.safe_load(file.read_text()) or {}, str(file))


def run_dir_for(cfg: Any, resume_dir: str | Path | None) -> Path:
    if resume_dir is not None:
        return Path(resume_dir)
    name = cfg.trainer.run_name or f"{cfg.task.name}-{cfg.model.backbone}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(cfg.trainer.out_dir) / name


def build_encoder(cfg: Any, tokenizer: Any = None, causal: bool = False):
    """The backbone of the run: registered variant (+ overrides) or ``model.init`` weights.
    Image backbones take the data's image size and channels, text backbones the tokenizer's
    vocabulary and special ids (and ``causal``), unless overrides say otherwise."""
    from convergent.backbones.configs import vocabulary_overrides
    from convergent.backbones.pretrained import from_pretrained, load_config
    from convergent.backbones.registry import backbone_config, build_backbone

    overrides = dict(cfg.model.overrides or {})
    base = load_config(cfg.model.init) if cfg.model.init else backbone_config(cfg.model.backbone)
    if hasattr(base, "img_size"):
        overrides.setdefault("img_size", cfg.data.img_size)
        overrides.setdefault("in_chans", cfg.data.in_chans)
    if tokenizer is not None and hasattr(base, "vocab_size"):
        found = vocabulary_overrides(base, tokenizer_vocab(tokenizer, cfg.data.max_length))
        for k, v in {**found, **({"causal": True} if causal else {})}.items():
            overrides.setdefault(k, v)
    if cfg.model.init:
        return from_pretrained(cfg.model.init, **overrides)
    return build_backbone(cfg.model.backbone, **overrides)


def build_run_task(cfg: Any, tokenizer: Any = None):
    """The task of a run around its encoder (:func:`build_encoder`); a task that embeds text
    beside its backbone (CLIP's text tower, ViLT's word embeddings) takes what the run's
    tokenizer decides through ``Task.configure_text``."""
    from convergent.tasks.registry import build_task, task_class

    cls = task_class(cfg.task.name)
    backbone = build_encoder(cfg, tokenizer, causal="supports_causal" in cls.requires)
    task_cfg = cfg.task.selected()
    if tokenizer is not None:
        cls.configure_text(task_cfg, tokenizer_vocab(tokenizer, cfg.data.max_length))
    return build_task(cfg.task.name, backbone, task_cfg)


def build_datasets(cfg: Any) -> tuple[Any, Any | None]:
    """Training set and, when the dataset has one, the labelled test split for evaluation."""
    from convergent.data.registry import build_dataset

    kw = dict(root=cfg.data.root, img_size=cfg.data.img_size, in_chans=cfg.data.in_chans)
    train = build_dataset(cfg.data.name, "train", limit=cfg.data.limit, **kw)
    try:
        test = build_dataset(cfg.data.name, "test", **kw)
    except (ValueError, KeyError, FileNotFoundError):
        test = None
    if test is not None and not test.heldout:
        print(f"note: {cfg.data.name} at {cfg.data.root} has no held-out split folder (test/ or val/): no evaluation")
        test = None
    return train, test


def masks_whole_words(task_cfg: Any) -> bool:
    """Whether the task masks whole words, so its batches need word ids."""
    return isinstance(task_cfg, TokenMaskingConfig) and task_cfg.whole_word_mask


def run_pretrain(cfg: Any, resume_dir: str | Path | None = None) -> dict:
    """Run (or resume) one pre-training run; returns the summary (also in ``summary.json``)."""
    import torch

    from convergent.data.transforms import build_transform
    from convergent.training.loop import Trainer
    from convergent.workflows.callbacks import ReconstructionCallback
    from convergent.workflows.summary import finish_run

    run_dir = run_dir_for(cfg, resume_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume_dir is None:
        (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    torch.manual_seed(cfg.trainer.seed)  # weights of the backbone and heads
    train_set, test_set = build_datasets(cfg)
    tokenizer = prepare_text(cfg, run_dir, train_set, test_set, encoder_dir=cfg.model.init,
                             word_ids=masks_whole_words(cfg.task.selected()))  # fmt: skip
    task = build_run_task(cfg, tokenizer)
    trainer = Trainer(cfg.trainer, cfg.optim, run_dir, cfg.data.batch_size, cfg.data.num_workers)
    callbacks = [ReconstructionCallback(cfg, test_set or train_set, run_dir)] if task.reconstructs else []
    fit_set = train_set
    if cfg.data.pack and tokenizer is not None:
        if trainer.fabric.is_global_zero:  # one process writes the blocks, the others open them
            packed_training_set(run_dir, train_set, tokenizer, cfg.data.max_length)
        trainer.fabric.barrier()
        fit_set = packed_training_set(run_dir, train_set, tokenizer, cfg.data.max_length)
    train_summary = trainer.fit(
        task, fit_set, transform=build_transform(cfg.data, train=True), resume=resume_dir is not None,
        callbacks=callbacks,
    )
    summary = finish_run(cfg, trainer, task, train_set, test_set, run_dir, train_summary, tokenizer)
    _shutdown_distributed()
    return summary


def _shutdown_distributed() -> None:
    """Leave the process group cleanly (rank 0 evaluated alone meanwhile)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
