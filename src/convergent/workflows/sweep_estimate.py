"""``convergent sweep --dry-run``: the points of a sweep, their N and training FLOPs, and how
long the sweep should take, from a few steps timed here — nothing is trained or written.

The estimate adds, per run, its steps x the measured time of a training step, and per budget
the evaluation passes (held-out loss; the probes' feature passes over the labelled splits; or a
fine-tuning's steps), each from the measured time of a forward pass or step. Start-up, data
loading, checkpoints and the end-of-run pictures are not counted: expect somewhat more.
"""

from convergent.data.protocol import Dataset
from convergent.workflows.sweep_costs import VariantCost, format_count, format_table, variant_costs
from convergent.workflows.sweep_plan import SweepPlan, SweepRun


def run_seconds(plan: SweepPlan, run: SweepRun, cost: VariantCost, train_size: int, test_size: int) -> float:
    """Estimated seconds of ``run`` and its points' measurements (module docstring)."""
    sweep, batch = plan.sweep, run.cfg.data.batch_size
    per_sample = cost.forward_s / batch
    heldout = min(sweep.val_samples or test_size, test_size)
    kind = sweep.downstream.kind
    if kind in ("knn", "linear-probe"):  # feature passes over the probes' training samples and the held-out ones
        limit = run.cfg.eval.limit_train
        downstream = (min(limit or train_size, train_size) + heldout) * per_sample
    elif kind == "finetune":
        downstream = sweep.downstream.finetune_steps * cost.step_s * sweep.downstream.finetune_batch_size / batch
    else:
        downstream = 0.0
    return run.budgets[-1] * cost.step_s + len(run.budgets) * (heldout * per_sample + downstream)


def dry_run(plan: SweepPlan, train_set: Dataset, test_set: Dataset) -> dict:
    """Print the sweep's points with N, FLOPs and data, and the time estimate; returns them."""
    costs = variant_costs(plan, train_set, timed=True)
    rows = [("point", "N", "FLOPs", "seen", "distinct", "run time")]
    total = 0.0
    for run in plan.runs:
        cost = costs[run.variant]
        seconds = run_seconds(plan, run, cost, len(train_set), len(test_set))
        total += seconds
        for i, p in enumerate(run.points):
            rows.append((p.key, format_count(cost.params), format_count(cost.flops_per_step * p.steps),
                         format_count(run.cfg.data.batch_size * p.steps), format_count(run.distinct_samples),
                         _duration(seconds) if i == len(run.points) - 1 else ""))  # fmt: skip
    print(format_table(rows))
    measured = ", ".join(f"{v} {c.step_s:.3g} s/step" for v, c in costs.items())
    print(f"sweep: {len(plan.points)} points in {len(plan.runs)} runs; estimated {_duration(total)} one after another "
          f"(measured here at batch {plan.base.data.batch_size}: {measured}; not counting start-up and checkpoints)")  # fmt: skip
    return {"points": len(plan.points), "runs": len(plan.runs), "estimated_s": total,
            "costs": {v: vars(c) for v, c in costs.items()}}  # fmt: skip


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
