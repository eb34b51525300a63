"""``convergent finetune``: a classification head on a (pre-trained or random) backbone,
trained end to end, then top-1 accuracy on the held-out split. A run that ends early (diverged,
or preempted by a signal) is not evaluated; its ``summary.json`` says ``status`` and ``reason``."""

import dataclasses
import json

import torch

from convergent.config import FinetuneConfig, OptimConfig, PretrainConfig
from convergent.data.transforms import build_transform
from convergent.evaluation.finetune import finetune
from convergent.evaluation.report import format_report
from convergent.rundir import RunDir
from convergent.training.numerics import flush_denormals
from convergent.training.status import RunStopped
from convergent.validate import check_finetune
from convergent.workflows.assemble import build_datasets, build_encoder
from convergent.workflows.preflight import check_finetune_start
from convergent.workflows.runs import resolve_encoder, started_run
from convergent.workflows.summary import finish_stopped
from convergent.workflows.text import prepare_text


def finetune_config(pre: PretrainConfig, init: str | None, labels: int | None, steps: int, batch_size: int,
                    lr: float, layer_decay: float, run_name: str | None = None) -> FinetuneConfig:  # fmt: skip
    """The fine-tuning of a pre-training run's encoder (``init``: its encoder or run directory;
    None: random weights of its backbone) on the run's data: the first ``labels`` labelled
    training samples (None: all; at least one batch), ``steps`` steps of AdamW with warm-up over
    the first tenth, ``lr``, ``layer_decay``, weight decay 0.05. Device, precision, seed and
    output directory are the run's; the run directory is ``run_name``."""
    cfg = FinetuneConfig()
    cfg.data = dataclasses.replace(pre.data, limit=None if labels is None else max(labels, batch_size),
                                   batch_size=batch_size)  # fmt: skip
    cfg.model = dataclasses.replace(pre.model, init=init)
    cfg.optim = OptimConfig(lr=lr, warmup_steps=max(steps // 10, 1), weight_decay=0.05, layer_decay=layer_decay)
    cfg.trainer = dataclasses.replace(pre.trainer, max_steps=steps, checkpoint_every=steps, run_name=run_name)
    return cfg


def run_finetune(cfg: FinetuneConfig) -> dict:
    """Fine-tune per ``cfg`` (a ``FinetuneConfig``); returns the summary (also ``summary.json``).
    The config, the output directory and the model are checked before the run directory is
    written."""
    check_finetune(cfg)
    if cfg.model.init:
        enc_dir, _ = resolve_encoder(cfg.model.init)
        cfg.model.init = str(enc_dir)
    run = RunDir.named(cfg.trainer.out_dir, cfg.trainer.run_name,
                       f"finetune-{'pretrained' if cfg.model.init else 'scratch'}")  # fmt: skip
    check_finetune_start(cfg, run)
    with started_run(run, cfg):
        return _finetune(cfg, run)


def _finetune(cfg: FinetuneConfig, run: RunDir) -> dict:
    """The run itself: data, encoder, training, test accuracy, the summary."""
    if cfg.trainer.flush_denormals:
        flush_denormals()  # before the first parallel operation: every CPU thread inherits it
    torch.manual_seed(cfg.trainer.seed)
    train_set, test_set = build_datasets(cfg)
    if test_set is None or not train_set.classes:
        raise ValueError(f"dataset {cfg.data.name!r} needs class labels and a test split to fine-tune on")
    num_classes = len(train_set.classes)
    task_cfg = dataclasses.replace(cfg.classify, num_classes=num_classes)
    tokenizer = prepare_text(cfg, run.root, train_set, test_set, encoder_dir=cfg.model.init)
    backbone = build_encoder(cfg, tokenizer)
    lead = {"init": cfg.model.init or "random", "backbone": cfg.model.backbone, "data": train_set.source}
    try:
        result = finetune(
            backbone, train_set, test_set, build_transform(cfg.data, train=True),
            build_transform(cfg.data, train=False), num_classes, cfg.trainer, cfg.optim, run.root,
            cfg.data.batch_size, cfg.data.num_workers, task_cfg=task_cfg,
        )  # fmt: skip
    except RunStopped as stopped:
        return finish_stopped(stopped, run, lead)
    summary = {
        **lead,
        "test_acc": result["test_acc"],
        **{k: v for k, v in result.get("train_summary", {}).items() if k != "run_dir"},
        "run_dir": str(run),
    }
    run.summary.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(format_report(summary))
    return summary
