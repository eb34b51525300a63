"""``convergent pretrain``: data → backbone → task → trainer → saved encoder → evaluation.

The run directory (:class:`~convergent.rundir.RunDir`) holds the resolved ``config.yaml``,
``metrics.jsonl``, TensorBoard logs, ``checkpoints/``, the pre-trained ``encoder/``
(``save_pretrained``), ``reconstructions.png``, ``loss.png`` and ``summary.json``.

A run that ends early publishes no ``encoder/`` and is not evaluated: ``summary.json`` says
``status: failed`` (halted as diverged) or ``preempted`` (stopped on SIGTERM / SIGINT after a
checkpoint; ``convergent pretrain --resume RUN_DIR`` continues it), with the ``reason``.
"""

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from convergent.choices import FALSE_IMAGE
from convergent.config import PretrainConfig
from convergent.data.pairs import ImageTextPairs
from convergent.data.transforms import build_transform
from convergent.rundir import RunDir
from convergent.tasks.configs import TokenMaskingConfig
from convergent.training.batch_keys import check_batch_keys, view_keys
from convergent.training.callbacks import Callback
from convergent.training.loop import Trainer
from convergent.training.numerics import flush_denormals
from convergent.training.status import RunStopped
from convergent.validate import check_pretrain
from convergent.workflows.assemble import build_datasets, build_run_task
from convergent.workflows.banner import banner, starting_line
from convergent.workflows.callbacks import ReconstructionCallback
from convergent.workflows.preflight import check_pretrain_start
from convergent.workflows.runs import started_run
from convergent.workflows.summary import finish_run, finish_stopped
from convergent.workflows.text import packed_training_set, prepare_text


def run_dir_for(cfg: PretrainConfig, resume_dir: str | Path | None) -> RunDir:
    """``resume_dir``, or a new run directory: ``trainer.out_dir/trainer.run_name``, by default
    ``task-backbone-timestamp``."""
    if resume_dir is not None:
        return RunDir(resume_dir)
    return RunDir.named(cfg.trainer.out_dir, cfg.trainer.run_name, f"{cfg.task.name}-{cfg.model.backbone}")


def masks_whole_words(task_cfg: object) -> bool:
    """Whether the task masks whole words, so its batches need word ids."""
    return isinstance(task_cfg, TokenMaskingConfig) and task_cfg.whole_word_mask


def run_pretrain(cfg: PretrainConfig, resume_dir: str | Path | None = None,
                 callbacks: Sequence[Callback] = ()) -> dict:  # fmt: skip
    """Run (or resume) one pre-training run; returns the summary (also in ``summary.json``),
    whose ``status`` is ``ok``, ``failed`` or ``preempted``. The config, the output directory and
    the model are checked first (a ``ValueError``, an ``OSError`` of the disk); the run directory
    is written only then. ``callbacks`` are called by the Trainer besides the run's own (a
    sweep measures its step budgets with one)."""
    check_pretrain(cfg, resume_dir)
    run = run_dir_for(cfg, resume_dir)
    check_pretrain_start(cfg, run, resume=resume_dir is not None)
    print(starting_line("pretrain", cfg, run, cfg.task.name), flush=True)  # before anything slow
    with started_run(run, cfg if resume_dir is None else None):
        summary = _pretrain(cfg, run, resume_dir is not None, callbacks)
    _shutdown_distributed()
    return summary


def _pretrain(cfg: PretrainConfig, run: RunDir, resume: bool, extra_callbacks: Sequence[Callback] = ()) -> dict:
    """The run itself: data, tokenizer, task, training, the end of the run."""
    if cfg.trainer.flush_denormals:
        flush_denormals()  # before the first parallel operation: every CPU thread inherits it
    torch.manual_seed(cfg.trainer.seed)  # weights of the backbone and heads
    train_set, test_set = build_datasets(cfg)
    tokenizer = prepare_text(cfg, run.root, train_set, test_set, encoder_dir=cfg.model.init,
                             word_ids=masks_whole_words(cfg.task.selected()))  # fmt: skip
    task = build_run_task(cfg, tokenizer)
    if FALSE_IMAGE in task.batch_keys and isinstance(train_set, ImageTextPairs):  # ViLT's ITM negatives
        train_set.with_false_images(seed=cfg.trainer.seed)
    trainer = Trainer(cfg.trainer, cfg.optim, run.root, cfg.data.batch_size, cfg.data.num_workers)
    callbacks = [ReconstructionCallback(cfg, test_set or train_set, run)] if task.reconstructs else []
    callbacks += extra_callbacks
    fit_set = train_set
    if cfg.data.pack and tokenizer is not None:
        if trainer.fabric.is_global_zero:  # one process writes the blocks, the others open them
            packed_training_set(run.root, train_set, tokenizer, cfg.data.max_length)
        trainer.fabric.barrier()
        fit_set = packed_training_set(run.root, train_set, tokenizer, cfg.data.max_length)
    transform = build_transform(cfg.data, train=True)
    check_batch_keys(task, fit_set, view_keys(task, fit_set, transform))  # a mismatch before the banner, not after
    if trainer.fabric.is_global_zero:
        print(banner(task, train_set, test_set, trainer, cfg), flush=True)
    try:
        train_summary = trainer.fit(task, fit_set, transform=transform, resume=resume, callbacks=callbacks)
    except RunStopped as stopped:
        lead = {"task": cfg.task.name, "backbone": cfg.model.backbone, "data": train_set.source}
        how = f"convergent pretrain --resume {run}"
        return finish_stopped(stopped, run, lead, how, rank_zero=trainer.fabric.is_global_zero)
    return finish_run(cfg, trainer, task, train_set, test_set, run, train_summary, tokenizer)


def _shutdown_distributed() -> None:
    """Leave the process group cleanly (rank 0 evaluated alone meanwhile)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
