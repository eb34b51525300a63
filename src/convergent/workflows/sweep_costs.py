"""What a run of a sweep costs, per variant: its parameters N, the FLOPs of one training step
(:mod:`convergent.training.flops`, at the run's batch) and, for ``--dry-run``, the measured
time of a step and of an evaluation pass — the basis of the time estimate.

N is the parameter count of the backbone (the encoder: every parameter, patch and position
embeddings and the mask token included); the task's heads and decoders are counted apart
(``task_params``) and not in N. Costs depend on the variant only (not on the data fraction or
the budget), so they are measured once per variant and kept in ``OUT/costs.json``.
"""

import math
from dataclasses import asdict, dataclass

import torch

from convergent.config import PretrainConfig
from convergent.data.protocol import Dataset
from convergent.data.transforms import build_transform, transform_batch
from convergent.training.flops import measure_step, train_step_flops
from convergent.workflows.assemble import build_run_task
from convergent.workflows.sweep_plan import SweepPlan
from convergent.workflows.sweep_records import read_json, write_json


@dataclass
class VariantCost:
    """The costs of one variant at the sweep's batch size."""

    params: int
    """N: parameters of the backbone (encoder), embeddings included."""
    task_params: int
    """Parameters of the whole task (backbone, heads, decoder)."""
    flops_per_step: int
    """FLOPs of one training step's forward and backward pass (``FlopCounterMode``)."""
    batch_size: int
    """Samples per step the FLOPs were counted at."""
    step_s: float | None = None
    """Measured seconds per optimizer step (``--dry-run`` only)."""
    forward_s: float | None = None
    """Measured seconds of one forward pass of a batch without gradients (``--dry-run`` only)."""


def sweep_device(cfg: PretrainConfig) -> torch.device:
    """Where a cost is measured: the GPU when the run would use one, else the CPU."""
    use_cuda = cfg.trainer.accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available()
    return torch.device("cuda" if use_cuda else "cpu")


def example_batch(cfg: PretrainConfig, train_set: Dataset, views: int, device: torch.device) -> dict:
    """A training batch as the Trainer makes it: the first ``data.batch_size`` samples (repeated
    when there are fewer), the training transform drawn from a seeded generator, ``views`` views."""
    items = [train_set[i % len(train_set)] for i in range(cfg.data.batch_size)]
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in train_set.collate_fn(items).items()}
    generator = torch.Generator(device=device).manual_seed(cfg.trainer.seed)
    return transform_batch(batch, build_transform(cfg.data, train=True), generator, views)


def measure_variant(cfg: PretrainConfig, train_set: Dataset, timed: bool = False) -> VariantCost:
    """The costs of the run ``cfg`` (its variant, batch and task) on ``train_set``; ``timed``:
    also time a few training steps and an evaluation pass (on a copy of the task built for this)."""
    torch.manual_seed(cfg.trainer.seed)
    device = sweep_device(cfg)
    task = build_run_task(cfg).to(device)
    batch = example_batch(cfg, train_set, task.num_views, device)
    params = sum(p.numel() for p in task.backbone.parameters())
    task_params = sum(p.numel() for p in task.parameters())
    if timed:
        step = measure_step(task, batch)
        return VariantCost(params, task_params, step.flops, cfg.data.batch_size, step.step_s, step.forward_s)
    return VariantCost(params, task_params, train_step_flops(task, batch), cfg.data.batch_size)


def variant_costs(plan: SweepPlan, train_set: Dataset, timed: bool = False,
                  variants: set[str] | None = None) -> dict[str, VariantCost]:  # fmt: skip
    """Variant -> its costs on batches of ``train_set`` (the training split), for the sweep's
    variants (or ``variants``): read from ``OUT/costs.json`` when measured before at this batch
    size, else measured with the first run's config of the variant and saved with the others
    (timed measurements, ``--dry-run``'s, are always measured and written nowhere). Nothing is
    written when every cost was read: parallel workers read the file their parent wrote."""
    saved = read_json(plan.paths.costs) if plan.paths.costs.is_file() and not timed else {}
    costs, measured = {}, {}
    for run in plan.runs:
        if run.variant in costs or (variants is not None and run.variant not in variants):
            continue
        known = saved.get(run.variant)
        if known is not None and known.get("batch_size") == run.cfg.data.batch_size:
            costs[run.variant] = VariantCost(**known)
            continue
        print(f"sweep: measuring {run.variant} (parameters, FLOPs of a step{', time' if timed else ''})", flush=True)
        costs[run.variant] = measured[run.variant] = measure_variant(run.cfg, train_set, timed)
    if measured and not timed:
        write_json(plan.paths.costs, {**saved, **{v: asdict(c) for v, c in measured.items()}})
    return costs


def format_count(x: float) -> str:
    """``5.48M``, ``1.2T``: a count with an SI prefix, 3 significant digits."""
    if x == 0 or not math.isfinite(x):
        return str(x)
    exponent = min(int(math.log10(abs(x)) // 3), 5)
    return f"{x / 1000**exponent:.3g}{' kMGTP'[exponent].strip()}"


def format_table(rows: list[tuple[str, ...]]) -> str:
    """Rows of strings as an aligned table: the first column left-aligned, the others right."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)  # fmt: skip
