"""A scaling sweep's grid as pre-training runs and points, and where it writes.

Each variant x data fraction is one pre-training run (:class:`SweepRun`), trained to the
largest step budget; each of its budgets is a point (:class:`SweepPoint`), measured as the run
passes that step (:mod:`.sweep_budgets`). A run's config is the sweep's base config (its preset
with the sweep's overrides) with ``model.backbone``, ``data.limit``, ``trainer.max_steps``,
``trainer.seed`` and the run directory set; its end-of-run probes are off (the sweep measures
its own score at every budget), and it checkpoints at the greatest common divisor of its
budgets, so a budget is also a checkpoint.

Directory of a sweep (:class:`SweepPaths`)::

    OUT/sweep.yaml        the sweep's config as it ran (parallel workers read it)
    OUT/costs.json        per variant: parameters, FLOPs of one training step
    OUT/runs/RUN/         the pre-training run directories (``swinv2_micro-f0.5``)
    OUT/finetune/         downstream fine-tuning runs (downstream.kind 'finetune')
    OUT/points/KEY.json   one file per point, written atomically when measured
    OUT/results.json      every point, in grid order
    OUT/fit.json          the fit, the compute frontier, the loss-score rank correlation
    OUT/scaling.png       the pictures
"""

import copy
import dataclasses
import math
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

from convergent.config import PretrainConfig, SweepConfig
from convergent.validate import Where, check_config, process_count


@dataclass(frozen=True)
class SweepPoint:
    """One point of the grid: a variant trained on a fraction of the data for ``steps`` steps."""

    variant: str
    fraction: float
    steps: int

    @property
    def key(self) -> str:
        """File-name-safe name of the point: ``swinv2_micro-f0.5-s200``."""
        return f"{run_name(self.variant, self.fraction)}-s{self.steps}"


@dataclass
class SweepRun:
    """One pre-training run of a sweep: ``variant`` on ``fraction`` of the training split,
    trained to the largest of ``budgets`` (ascending)."""

    variant: str
    fraction: float
    budgets: tuple[int, ...]
    cfg: PretrainConfig
    """The run's config (``trainer.max_steps`` is the largest budget)."""
    distinct_samples: int
    """Training samples the run draws from (its fraction of the split)."""

    @property
    def name(self) -> str:
        return run_name(self.variant, self.fraction)

    @property
    def points(self) -> list[SweepPoint]:
        return [SweepPoint(self.variant, self.fraction, b) for b in self.budgets]


def run_name(variant: str, fraction: float) -> str:
    """The run directory's name of ``variant`` on ``fraction`` of the data: ``swinv2_micro-f0.5``."""
    return f"{variant}-f{fraction:g}"


@dataclass(frozen=True)
class SweepPaths:
    """Every path a sweep writes (module docstring)."""

    out: Path

    @property
    def config(self) -> Path:
        return self.out / "sweep.yaml"

    @property
    def costs(self) -> Path:
        return self.out / "costs.json"

    @property
    def runs(self) -> Path:
        return self.out / "runs"

    @property
    def finetune(self) -> Path:
        return self.out / "finetune"

    @property
    def points(self) -> Path:
        return self.out / "points"

    @property
    def results(self) -> Path:
        return self.out / "results.json"

    @property
    def fit(self) -> Path:
        return self.out / "fit.json"

    @property
    def plot(self) -> Path:
        return self.out / "scaling.png"

    def point(self, key: str) -> Path:
        return self.points / f"{key}.json"


@dataclass
class SweepPlan:
    """A sweep resolved: its config, base run config, paths and runs (in grid order)."""

    sweep: SweepConfig
    base: PretrainConfig
    paths: SweepPaths
    runs: list[SweepRun]
    train_size: int
    """Samples of the whole training split (fraction 1)."""

    @property
    def points(self) -> list[SweepPoint]:
        return [p for run in self.runs for p in run.points]

    def run(self, name: str) -> SweepRun:
        """The run named ``name``; a ``ValueError`` listing the names when there is none."""
        for run in self.runs:
            if run.name == name:
                return run
        raise ValueError(f"no run {name!r} in this sweep; its runs: {', '.join(r.name for r in self.runs)}")


def plan_sweep(sweep: SweepConfig, base: PretrainConfig, train_size: int, where: Where) -> SweepPlan:
    """The runs of ``sweep`` over ``base`` (its preset with its overrides, resolved) on a
    training split of ``train_size`` samples; every run's config is checked here (``where``:
    the sweep's file, named in errors), before anything trains."""
    if process_count(base.trainer) != 1:
        raise where.error("overrides", f": trainer.devices must be 1 in a sweep (each run is one process; "
                          f"`convergent sweep --devices N` runs N runs at once), got {base.trainer.devices!r}")  # fmt: skip
    paths = SweepPaths(Path(sweep.out))
    budgets = tuple(sorted(sweep.grid.steps))
    runs = []
    for variant in sweep.grid.variants:
        for fraction in sweep.grid.fractions:
            samples = train_size if fraction == 1 else max(round(fraction * train_size), 1)
            if samples < base.data.batch_size:
                raise where.error("grid.fractions", f": {fraction:g} of the {train_size} training samples is "
                                  f"{samples}, less than one batch (data.batch_size {base.data.batch_size})")  # fmt: skip
            run = SweepRun(variant, fraction, budgets, _run_config(sweep, base, paths, variant, fraction, samples,
                                                                   budgets), samples)  # fmt: skip
            check_config(run.cfg, Where(f"{where.file or 'sweep'} (run {run.name})"))
            runs.append(run)
    return SweepPlan(sweep, base, paths, runs, train_size)


def _run_config(sweep: SweepConfig, base: PretrainConfig, paths: SweepPaths, variant: str, fraction: float,
                samples: int, budgets: tuple[int, ...]) -> PretrainConfig:  # fmt: skip
    """The pre-training config of one run of the sweep (module docstring)."""
    base = copy.deepcopy(base)  # runs share no mutable section
    model = dataclasses.replace(base.model, backbone=variant)
    data = dataclasses.replace(base.data, limit=None if fraction == 1 and base.data.limit is None else samples)
    trainer = dataclasses.replace(
        base.trainer, max_steps=budgets[-1], seed=sweep.seed, out_dir=str(paths.runs),
        run_name=run_name(variant, fraction), checkpoint_every=reduce(math.gcd, budgets),
    )  # fmt: skip
    evaluation = dataclasses.replace(base.eval, knn=False, linear_probe=False)  # the sweep scores every budget
    return dataclasses.replace(base, model=model, data=data, trainer=trainer, eval=evaluation)
