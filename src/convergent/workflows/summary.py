"""End of a pre-training run: save the encoder, draw the loss, evaluate, write the summary; or,
for a run that ended early, write a summary that says so (and no encoder). The summary's
``status`` gives the command's exit status (:func:`exit_status`)."""

import json
import sys
import time
from typing import Any

from convergent import exits
from convergent.config import PretrainConfig
from convergent.data.protocol import Dataset
from convergent.evaluation.report import format_report
from convergent.rundir import RunDir
from convergent.tasks.base import Task
from convergent.training.loop import Trainer
from convergent.training.status import FAILED, OK, PREEMPTED, RunStopped
from convergent.workflows.evaluate import evaluate_end_of_run
from convergent.workflows.pictures import save_loss_plot


def finish_run(cfg: PretrainConfig, trainer: Trainer, task: Task, train_set: Dataset, test_set: Dataset | None,
               run: RunDir, train_summary: dict, tokenizer: Any = None) -> dict:  # fmt: skip
    """Rank 0: save ``encoder/`` (with the tokenizer of a text run), what the task adds
    (``Task.save_extras``: a vqvae run's ``image_tokenizer/``), ``loss.png``, the default
    evaluation (:func:`~convergent.workflows.evaluate.evaluate_end_of_run`) and
    ``summary.json``; print it."""
    if trainer.fabric.global_rank != 0:
        return train_summary
    backbone = task.backbone
    backbone.save_pretrained(run.encoder)
    if tokenizer is not None:
        tokenizer.save(run.encoder)
    task.save_extras(run)
    save_loss_plot(run.metrics, run.loss_plot, f"{cfg.task.name} / {cfg.model.backbone}")
    t = time.perf_counter()
    results = evaluate_end_of_run(cfg, task, tokenizer, train_set, test_set)
    if results:
        results["eval_wall_s"] = round(time.perf_counter() - t, 1)
    summary = {
        "task": cfg.task.name,
        "backbone": cfg.model.backbone,
        "data": train_set.source,
        **train_summary,
        **results,
        "encoder": str(run.encoder),
    }
    run.summary.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(format_report(summary))
    return summary


EXIT_STATUS = {OK: exits.OK, FAILED: exits.FAILED, PREEMPTED: exits.PREEMPTED}
"""A run's ``status`` -> the exit status of the command that ran it."""


def exit_status(summary: dict) -> int:
    """The exit status for a run's summary: ``OK``, ``FAILED`` or ``PREEMPTED`` (:mod:`convergent.exits`)."""
    return EXIT_STATUS[summary["status"]]


def finish_stopped(stopped: RunStopped, run: RunDir, lead: dict, resume: str | None = None,
                   rank_zero: bool = True) -> dict:  # fmt: skip
    """For a run that ended early (failed or preempted), on rank 0 (``rank_zero``):
    ``summary.json`` from ``lead`` (what the run was: task, backbone, data, ...) and the
    Trainer's summary, with no encoder; the summary table for a failed run, and one line on
    stderr saying what happened, where the last checkpoint is and, for a preempted run, the
    ``resume`` command. Returns the summary."""
    if not rank_zero:
        return stopped.summary
    summary = {**lead, **stopped.summary, "encoder": None}
    run.summary.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if stopped.status == FAILED:
        print(format_report(summary, title="training failed"))
    then = f"; resume with: {resume}" if resume and stopped.status == PREEMPTED else ""
    print(f"{stopped.status.upper()}: {stopped}{then}", file=sys.stderr, flush=True)
    return summary
