"""``convergent sweep``: a scaling sweep run point by point, resumably.

A sweep (:class:`~convergent.config.SweepConfig`) is planned into runs and points
(:mod:`.sweep_plan`). Each run — a variant on a fraction of the data — trains once to its
largest step budget; at each budget its point is measured (:mod:`.sweep_budgets`): held-out
loss with fixed masks, and the downstream score (a fine-tuning score after the run). Then the
fit, the compute frontier and the pictures (:mod:`.sweep_report`).

**Resuming.** Rerunning the same sweep continues it. A point whose file says ``done`` is never
measured again, and a run whose points are all done is not started. A run killed mid-way
resumes from its run directory's last checkpoint (``convergent pretrain --resume``'s exact
resume); a point whose budget is that checkpoint but was not measured (killed while measuring)
is measured from the checkpoint first; a run directory with no checkpoint yet starts over; a
fine-tuning killed mid-way starts over. A run stopped by SIGTERM / SIGINT after its checkpoint
stops the sweep (:class:`SweepStopped`).
"""

import shutil
from pathlib import Path

import yaml

from convergent.config import PretrainConfig, SweepConfig, to_dict
from convergent.data.protocol import Dataset
from convergent.rundir import RunDir
from convergent.training.checkpoint import complete_checkpoints, load_checkpoint
from convergent.training.status import FAILED, OK, PREEMPTED
from convergent.validate import Where
from convergent.workflows.assemble import build_datasets, build_run_task
from convergent.workflows.finetune import finetune_config, run_finetune
from convergent.workflows.pretrain import run_pretrain
from convergent.workflows.runs import read_config_dict
from convergent.workflows.sweep_budgets import BudgetCallback, BudgetMeter
from convergent.workflows.sweep_costs import VariantCost, sweep_device, variant_costs
from convergent.workflows.sweep_parallel import dispatch, worker_command
from convergent.workflows.sweep_plan import SweepPlan, SweepRun, plan_sweep
from convergent.workflows.sweep_records import read_json, read_points, write_point, write_results
from convergent.workflows.sweep_report import report_sweep


class SweepStopped(RuntimeError):
    """A run of the sweep stopped early on a signal (``status`` preempted): rerun the sweep to
    continue it."""

    status = PREEMPTED


def prepare_sweep(sweep: SweepConfig, base: PretrainConfig, where: Where) -> tuple[SweepPlan, Dataset, Dataset]:
    """``(plan, training split, held-out split)`` of ``sweep`` over its resolved base config;
    a ``ValueError`` naming the sweep's file when the data has no held-out split or a run's
    config is bad."""
    train_set, test_set = build_datasets(base)
    if test_set is None:
        raise where.error("preset", f": the data ({base.data.name}) has no held-out split; a sweep measures its "
                          "validation loss on the test split")  # fmt: skip
    return plan_sweep(sweep, base, len(train_set), where), train_set, test_set


def run_sweep(plan: SweepPlan, train_set: Dataset, test_set: Dataset, only: str | None = None) -> dict:
    """Run every run of ``plan`` not finished yet, one after another in this process (``only``:
    just the run of that name, as a parallel worker does); then, unless ``only``, write
    ``results.json``, the fit and the pictures. Returns the report (:func:`report_sweep`; with
    ``only``, the run's points)."""
    runs = [plan.run(only)] if only else plan.runs
    if not only:
        write_sweep_config(plan)
    check_recorded(plan)
    costs = variant_costs(plan, train_set, variants={run.variant for run in runs})
    for run in runs:
        run_one(plan, run, costs[run.variant], train_set, test_set)
        if not only:
            write_results(plan)
    if only:
        points = [read_points(plan).get(p.key) for p in runs[0].points]
        return {"points": points, "failed_points": [p["key"] for p in points if p and p.get("status") == FAILED]}
    return report_sweep(plan)


def run_sweep_parallel(plan: SweepPlan, train_set: Dataset, devices: int) -> dict:
    """Run the unfinished runs of ``plan`` as ``devices`` processes at a time, one per CUDA
    device (:mod:`.sweep_parallel`); then ``results.json``, the fit and the pictures. The costs
    are measured here first (the workers read them); a run that fails is reported, and the
    others go on."""
    write_sweep_config(plan)
    check_recorded(plan)
    variant_costs(plan, train_set)
    done = read_points(plan)
    jobs = {r.name: worker_command(plan.paths.config, r.name) for r in plan.runs
            if not all(done.get(p.key, {}).get("done") for p in r.points)}  # fmt: skip
    codes = dispatch(jobs, devices, plan.paths.out / "logs")
    failed = {name: code for name, code in codes.items() if code != 0}
    write_results(plan)
    report = report_sweep(plan)
    if failed:
        report["failed_runs"] = failed
        print(f"sweep: runs that did not finish (exit status): {failed}; rerun the sweep to continue them")
    return report


RECORDED_SETTINGS = {"downstream": "downstream.kind", "val_seed": "seed", "val_batch_size": "val_batch_size",
                     "batch_size": "data.batch_size"}  # fmt: skip
"""Point record key -> the sweep setting it must agree with (points measured otherwise are not comparable)."""


def check_recorded(plan: SweepPlan) -> None:
    """The points already measured in ``OUT`` were measured as this sweep measures them; a
    ``ValueError`` naming the point and the setting when not."""
    sweep = plan.sweep
    now = {"downstream": sweep.downstream.kind, "val_seed": sweep.seed, "val_batch_size": sweep.val_batch_size,
           "batch_size": plan.base.data.batch_size}  # fmt: skip
    for key, record in read_points(plan).items():
        for field, setting in RECORDED_SETTINGS.items():
            if record.get(field) != now[field]:
                raise ValueError(f"{plan.paths.point(key)}: measured with {setting} {record.get(field)!r}, this sweep "
                                 f"has {now[field]!r}; use another --out, or delete the point to measure it again")  # fmt: skip


def write_sweep_config(plan: SweepPlan) -> Path:
    """``OUT/sweep.yaml``: the sweep's config as it runs (what parallel workers read)."""
    plan.paths.out.mkdir(parents=True, exist_ok=True)
    plan.paths.config.write_text(yaml.safe_dump(to_dict(plan.sweep), sort_keys=False))
    return plan.paths.config


def run_one(plan: SweepPlan, run: SweepRun, cost: VariantCost, train_set: Dataset, test_set: Dataset) -> None:
    """Measure every point of ``run`` not measured yet: train (or resume) the run, then fine-tune
    where the downstream score is a fine-tuning."""
    recorded = read_points(plan)
    pending = {p.steps for p in run.points if p.key not in recorded}
    if pending:
        meter = BudgetMeter(plan, run, cost, train_set, test_set)
        _train(plan, run, meter, pending)
    _finetune_pending(plan, run)


def _train(plan: SweepPlan, run: SweepRun, meter: BudgetMeter, pending: set[int]) -> None:
    """Train ``run`` (resuming it when it has a checkpoint), measuring the ``pending`` budgets."""
    run_dir = RunDir(plan.paths.runs / run.name)
    _check_same_run(run_dir, run)
    summary = read_json(run_dir.summary) if run_dir.summary.is_file() else {}
    if summary.get("status") == OK:
        missing = ", ".join(str(b) for b in sorted(pending))
        raise ValueError(f"{run_dir} finished training, but its budgets {missing} were never measured (was the grid "
                         f"changed?); delete {run_dir} to train it again")  # fmt: skip
    checkpoints = complete_checkpoints(run_dir)
    if run_dir.root.exists() and not checkpoints:
        shutil.rmtree(run_dir.root)  # stopped before its first checkpoint: start again
    if checkpoints:
        last = load_checkpoint(checkpoints[-1])
        if last.step in pending:  # killed while measuring this budget: measure it from its checkpoint
            task = build_run_task(run.cfg)
            task.load_state_dict(last.weights, strict=True)
            task.to(sweep_device(run.cfg))
            meter(task, last.step)
            pending.discard(last.step)
    callback = BudgetCallback(meter, pending)
    print(f"sweep: run {run.name} ({'resumed' if checkpoints else 'new'}), budgets {list(run.budgets)}", flush=True)
    result = run_pretrain(run.cfg, resume_dir=run_dir if checkpoints else None, callbacks=[callback])
    if result["status"] == PREEMPTED:
        raise SweepStopped(f"run {run.name} stopped ({result.get('reason')}); rerun the sweep to continue it")
    if result["status"] == FAILED:
        for step in sorted(callback.pending):  # the budgets the run never reached
            _write_failed(plan, run, meter, step, result.get("reason"))


def _check_same_run(run_dir: RunDir, run: SweepRun) -> None:
    """A run directory found is this run (same steps, backbone, data): the grid may not change
    under a sweep's runs."""
    saved = read_config_dict(run_dir)
    if saved is None:
        return
    now = to_dict(run.cfg)
    for section, key in (("trainer", "max_steps"), ("model", "backbone"), ("data", "limit"), ("data", "batch_size")):
        was = saved.get(section, {}).get(key)
        if was != now[section][key]:
            raise ValueError(f"{run_dir.config}: {section}.{key} is {was!r}, but this sweep runs {run.name} with "
                             f"{now[section][key]!r}; use another --out, or delete {run_dir}")  # fmt: skip


def _write_failed(plan: SweepPlan, run: SweepRun, meter: BudgetMeter, step: int, reason: str | None) -> None:
    """The record of a budget its run never reached because it failed (diverged)."""
    record = meter.record(next(p for p in run.points if p.steps == step), {"val_loss": None, "val_samples": 0}, None)
    record.update(status=FAILED, reason=reason, done=True)
    write_point(plan, record)
    print(f"sweep: {record['key']}: failed ({reason})", flush=True)


def _finetune_pending(plan: SweepPlan, run: SweepRun) -> None:
    """Fine-tune the encoder of each measured point of ``run`` still waiting for its score."""
    d = plan.sweep.downstream
    for point in run.points:
        path = plan.paths.point(point.key)
        record = read_json(path) if path.is_file() else None
        if record is None or record["done"]:
            continue
        shutil.rmtree(plan.paths.finetune / point.key, ignore_errors=True)  # a killed fine-tuning starts again
        cfg = finetune_config(run.cfg, record["encoder"], d.finetune_labels, d.finetune_steps, d.finetune_batch_size,
                              d.finetune_lr, d.finetune_layer_decay, run_name=point.key)  # fmt: skip
        cfg.trainer.out_dir = str(plan.paths.finetune)
        summary = run_finetune(cfg)
        if summary["status"] == PREEMPTED:
            raise SweepStopped(f"the fine-tuning of {point.key} stopped; rerun the sweep to do it again")
        record.update(score=summary.get("test_acc"), done=True, finetune_run=str(plan.paths.finetune / point.key),
                      finetune_status=summary["status"])  # fmt: skip
        write_point(plan, record)
