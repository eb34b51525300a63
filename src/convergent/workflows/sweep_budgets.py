"""The points of one sweep run, measured as the run passes each step budget: the held-out loss
with fixed masks (:func:`convergent.evaluation.heldout.heldout_loss`) and the downstream score
— kNN or linear-probe accuracy of the encoder at that step, or, for a fine-tuning score, the
encoder saved (``RUN/budgets/step-NNNNNN/encoder``) to be fine-tuned after the run.

:class:`BudgetCallback` measures during training (after the step's checkpoint, under a forked
RNG, so the training stream is unchanged); :class:`BudgetMeter` is the measurement itself, which
the runner also applies to a checkpoint (a run killed while measuring a budget resumes after
that budget's checkpoint, and the point is measured from it).
"""

import shutil
from pathlib import Path

import torch

from convergent.data.protocol import Dataset
from convergent.data.transforms import build_transform
from convergent.evaluation.heldout import heldout_loss, heldout_subset
from convergent.rundir import RunDir
from convergent.tasks.base import Task
from convergent.training.callbacks import Callback
from convergent.workflows.evaluate import evaluate_encoder
from convergent.workflows.sweep_costs import VariantCost
from convergent.workflows.sweep_plan import SweepPlan, SweepPoint, SweepRun
from convergent.workflows.sweep_records import write_point

SCORE_NAMES = {"knn": "knn_acc", "linear-probe": "linear_probe_acc", "finetune": "finetune_acc", "none": None}
"""``downstream.kind`` -> the name of its score in a point's record."""


class BudgetMeter:
    """Measures one run's points (module docstring) and writes each point's record.

    ``train_set``: the whole labelled training split, ``heldout``: the held-out split. Of the
    latter the first ``val_samples`` are used, for the held-out loss and as the probes' test
    set; the probes train on ``train_set`` (at most ``eval.limit_train`` of it): the same for
    every point, whatever its data fraction."""

    def __init__(self, plan: SweepPlan, run: SweepRun, cost: VariantCost, train_set: Dataset, heldout: Dataset):
        self.plan, self.run, self.cost = plan, run, cost
        self.train_set = train_set
        self.heldout = heldout_subset(heldout, plan.sweep.val_samples)

    def budget_dir(self, step: int) -> Path:
        """Where what is kept of budget ``step`` goes: ``RUN/budgets/step-NNNNNN``."""
        return RunDir(self.plan.paths.runs / self.run.name).root / "budgets" / f"step-{step:06d}"

    def __call__(self, task: Task, step: int) -> dict:
        """Measure the point of budget ``step`` on ``task`` (weights at that step) and write its record."""
        sweep, kind = self.plan.sweep, self.plan.sweep.downstream.kind
        device = next(task.parameters()).device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            transform = build_transform(self.run.cfg.data, train=task.num_views > 1)
            val = heldout_loss(task, self.heldout, transform, batch_size=sweep.val_batch_size, seed=sweep.seed)
            score, encoder = None, None
            if kind in ("knn", "linear-probe"):
                scores = evaluate_encoder(self.run.cfg, task.backbone, self.train_set, self.heldout, names=[kind])
                score = scores[SCORE_NAMES[kind]]
            elif kind == "finetune":
                encoder = self._save_encoder(task, step)
        point = SweepPoint(self.run.variant, self.run.fraction, step)
        record = self.record(point, val, score)
        if encoder is not None:
            record["encoder"] = str(encoder)
        write_point(self.plan, record)
        shown = f", {record['score_name']} {score:.4f}" if score is not None else ""
        print(f"sweep: {point.key}: val_loss {val['val_loss']:.4f}{shown}", flush=True)
        return record

    def record(self, point: SweepPoint, val: dict, score: float | None) -> dict:
        """A point's record: what it is, its costs, its held-out loss and downstream score."""
        kind, c, batch = self.plan.sweep.downstream.kind, self.cost, self.run.cfg.data.batch_size
        return {
            "key": point.key, "variant": point.variant, "fraction": point.fraction, "steps": point.steps,
            "run": str(self.plan.paths.runs / self.run.name), "params": c.params, "task_params": c.task_params,
            "flops_per_step": c.flops_per_step, "train_flops": c.flops_per_step * point.steps, "batch_size": batch,
            "samples_seen": batch * point.steps, "distinct_samples": self.run.distinct_samples,
            "val_loss": val["val_loss"], "val_samples": val["val_samples"], "val_seed": self.plan.sweep.seed,
            "val_batch_size": self.plan.sweep.val_batch_size,
            "downstream": kind, "score_name": SCORE_NAMES[kind], "score": score,
            "done": kind != "finetune", "status": "ok",
        }  # fmt: skip

    def _save_encoder(self, task: Task, step: int) -> Path:
        """The backbone at budget ``step``, saved (``save_pretrained``) into a temporary
        directory renamed into place: a kill leaves no half-written encoder."""
        final = self.budget_dir(step) / "encoder"
        tmp = final.with_name("encoder.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        task.backbone.save_pretrained(tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        return final


class BudgetCallback(Callback):
    """Measures the point of each budget in ``pending`` when training reaches its step."""

    def __init__(self, meter: BudgetMeter, pending: set[int]):
        self.meter, self.pending = meter, set(pending)

    def on_step_end(self, trainer, task, step: int, metrics: dict) -> None:
        if step in self.pending:
            self.meter(task, step)
            self.pending.discard(step)
