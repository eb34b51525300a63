"""The training loop on Lightning Fabric.

    trainer = Trainer(trainer_cfg, optim_cfg, run_dir, batch_size=64)   # launches, seeds
    task = build_task(...)                  # after Trainer(): same initial weights everywhere
    summary = trainer.fit(task, dataset, transform, resume=True)

**Processes.** ``Trainer(...)`` creates the ``Fabric`` and calls ``fabric.launch()``. Under
``torchrun`` / SLURM the processes already exist and ``launch()`` only joins the process
group; with ``devices > 1`` in a plain ``python script.py`` Fabric re-runs the script's
command once per extra device (everything before ``Trainer(...)`` runs in every process).
Then ``fabric.seed_everything(cfg.seed)`` is called, so a task built after the Trainer has
the same initial weights on every process (DDP also broadcasts rank 0's weights).

**Randomness.** ``fit`` seeds torch / numpy / python RNGs per process from ``(seed, rank)``
(so random masks differ across processes, and the run does not depend on what was drawn
before ``fit``), and owns a ``torch.Generator`` on the device, passed to ``transform``. On
``resume=True`` all of these, the data position, model, optimizer and scheduler come back
from the latest checkpoint, so the continuation is exact. Callbacks should not draw from
the global RNGs (they run after a step's checkpoint is taken).

**Data.** ``dataset`` is a :class:`convergent.data.protocol.Dataset`: before anything else
``fit`` checks that it yields the batch keys the task reads
(:func:`~convergent.training.batch_keys.check_batch_keys`, counting the views the Trainer
adds), then batches it with its ``collate_fn``. ``batch_size`` is the global batch per
optimizer step; each process runs micro-batches of ``batch_size / (world_size * accumulate)``
samples. The data order is :class:`~convergent.training.sampler.ResumableSampler` (one epoch
= one permutation, the incomplete tail dropped); a streamed dataset (tar shards) orders itself
through :class:`~convergent.training.sampler.StreamOrder` (resumes continue in a fresh order).
A batch's ``"skipped"`` reports (samples a loader worker passed over) go to the dataset's
``skips`` (:class:`~convergent.data.skips.SkipLog`). The summary counts what was skipped
while building the dataset once, and sums what each process skipped while reading.

**A step.** For each micro-batch: ``transform(batch["image"], generator)`` on the device
(a task declaring ``num_views = n > 1`` gets ``n`` independent draws of the same images,
``batch["image"]``, ``batch["image2"]``, ..., for contrastive objectives; the further ones as
``transform(images, generator, view=v)``, v = 1 .. n-1, for per-view augmentation),
``task(batch)["loss"] / accumulate`` backward (gradient sync only on the last one). Then the
loss and every scalar term the task returns are averaged over micro-batches and processes
(one all-reduce, one host sync per step), gradients are clipped, and the optimizer steps
unless the loss (or, without an fp16 grad scaler, the gradient norm) is not finite: then the
step is skipped and counted (``nonfinite='skip'``) or the run stops (``'stop'``). A skipped
step still counts as a step (the schedule and the data move on); too many of them halt the run
as diverged (:mod:`~convergent.training.nonfinite`). Then the schedule advances,
``task.on_step_end(step, max_steps)`` runs (``step`` = steps completed, 1..max_steps),
metrics are logged every ``log_every`` steps, a checkpoint is written every
``checkpoint_every`` steps and at the end, and each callback's ``on_step_end(trainer, task,
step, metrics)`` runs.

**How it ends.** ``fit`` returns the summary (``status: ok``) after ``max_steps``. A run halted
as diverged raises :class:`~convergent.training.status.Diverged` (``status: failed``, with the
``reason``); the first SIGTERM / SIGINT finishes the step, writes a checkpoint and raises
:class:`~convergent.training.status.Preempted` (``status: preempted``; a second signal stops at
once, see :mod:`~convergent.training.preemption`). Both carry the summary, which is also written
then. No checkpoint is written of weights that are not finite. ``final_loss`` is the last finite
loss, of step ``final_loss_step``.

**Numerics.** The CPU matmul route and the thread counts are recorded in the checkpoints and
the route is reused on resume and on every process (:mod:`~convergent.training.numerics`); so
is whether the train step is compiled (``trainer.compile``, :mod:`~convergent.training.compiling`:
``auto`` decides at a fresh run's first batch, from its FLOPs, never from a clock).
"""

import copy
import json
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning_fabric import Fabric
from torch import nn
from torch.utils.data import DataLoader

from convergent.choices import COMPILE_AUTO
from convergent.data.protocol import SKIPPED, Dataset
from convergent.data.skips import SkipLog
from convergent.data.transforms import transform_batch
from convergent.rundir import RunDir
from convergent.tasks.base import Task
from convergent.training.batch_keys import check_batch_keys, view_keys
from convergent.training.callbacks import Callback
from convergent.training.checkpoint import (
    checkpoints_dir,
    clean_incomplete,
    complete_checkpoints,
    contiguous_weights,
    load_latest,
    save_checkpoint,
    weights_for_saving,
)
from convergent.training.compiling import (
    CompileChoice,
    check_setting,
    compiled,
    decide_auto,
    require_compiler,
    with_compiler,
)
from convergent.training.flops import meta_step_flops
from convergent.training.fsdp import OPTIMIZER_FORMAT, fsdp_strategy, full_state, gather_into, load_full_state
from convergent.training.metrics import MetricsLogger, ProgressReporter
from convergent.training.nonfinite import NonfiniteCount, check_policy, divergence, weights_finite
from convergent.training.numerics import choose_numerics
from convergent.training.optim import build_optimizer
from convergent.training.preemption import StopSignals, signal_name
from convergent.training.rng import derive_seed, gather_rng, restore_rng, seed_rng
from convergent.training.sampler import ResumableSampler, StreamOrder
from convergent.training.schedule import CosineWarmup
from convergent.training.status import FAILED, OK, PREEMPTED, Diverged, Preempted


def micro_batch_size(batch_size: int, world_size: int, accumulate: int) -> int:
    """Samples per process per micro-batch; a clear error when it is not a whole number."""
    parts = world_size * accumulate
    if batch_size < parts or batch_size % parts:
        raise ValueError(
            f"batch_size {batch_size} cannot be split evenly over {world_size} process(es) x {accumulate} "
            f"accumulation step(s) = {parts} micro-batches ({batch_size / parts:g} samples each); "
            f"use a batch size that is a multiple of {parts}"
        )
    return batch_size // parts


@dataclass
class _Run:
    """Everything one ``fit`` call works with."""

    task: nn.Module
    module: Any  # the task wrapped by Fabric (and DDP, torch.compile)
    optimizer: Any  # Fabric-wrapped optimizer
    raw_optimizer: torch.optim.Optimizer
    scheduler: CosineWarmup
    sampler: ResumableSampler | StreamOrder
    loader: DataLoader
    generator: torch.Generator
    skips: SkipLog  # the dataset's: what this process's loader passed over is merged into it
    skips_at_start: int  # skipped when fit() began: while the dataset was built, the same in every process
    losses: list[float] = field(default_factory=list)  # finite step losses, all steps
    last_finite_step: int | None = None  # the step of losses[-1]
    nonfinite: NonfiniteCount = field(default_factory=NonfiniteCount)
    numerics: dict | None = None  # recorded in checkpoints (convergent.training.numerics)
    compile: CompileChoice | None = None  # None: 'auto', not decided yet (convergent.training.compiling)
    last_saved: int = -1
    resumed: bool = False
    start_step: int = 0
    samples: int = 0  # global samples seen in this fit() call
    t_start: float = 0.0
    log_step: int = 0
    log_time: float = 0.0
    logger: Any = None
    reporter: Any = None


@dataclass
class _Stop:
    """Why ``fit`` ends before ``max_steps``: ``status`` (FAILED / PREEMPTED) and ``reason``."""

    status: str
    reason: str


class Trainer:
    """Trains a Task (see the module docstring). ``trainer.fabric`` stays usable after
    ``fit`` (evaluation); ``trainer.step`` is the number of optimizer steps done."""

    def __init__(self, trainer_cfg, optim_cfg, run_dir: str | Path, batch_size: int, num_workers: int = 0,
                 progress: bool = True):  # fmt: skip
        check_policy(trainer_cfg)
        check_setting(trainer_cfg.compile)
        if optim_cfg.accumulate < 1:
            raise ValueError(f"optim.accumulate must be >= 1, not {optim_cfg.accumulate}")
        self.cfg, self.optim_cfg = trainer_cfg, optim_cfg
        self.run_dir = Path(run_dir)
        self.batch_size, self.num_workers, self.progress = int(batch_size), int(num_workers), progress
        self.fabric = Fabric(
            accelerator=trainer_cfg.accelerator, devices=trainer_cfg.devices, num_nodes=trainer_cfg.num_nodes,
            strategy=_strategy(trainer_cfg), precision=trainer_cfg.precision,
        )  # fmt: skip
        _check_strategy(self.fabric)
        self.sharded = trainer_cfg.strategy == "fsdp"
        """FSDP: the task is trained as a sharded copy (see :mod:`convergent.training.fsdp`)."""
        self.fabric.launch()
        self.fabric.seed_everything(trainer_cfg.seed, verbose=False)
        self.micro_batch = micro_batch_size(self.batch_size, self.fabric.world_size, optim_cfg.accumulate)
        self.step = 0
        self.summary: dict | None = None

    # --- public -------------------------------------------------------------------------
    def fit(
        self, task: Task, dataset: Dataset, transform=None, resume: bool = False, callbacks: Sequence[Callback] = ()
    ) -> dict:
        """Train ``task`` on ``dataset`` for ``max_steps`` optimizer steps; returns the summary
        (also written to ``run_dir/summary_train.json`` by rank 0). A task reading batch keys
        the dataset does not yield is refused here, before any step. Raises
        :class:`~convergent.training.status.Diverged` / ``Preempted`` (holding the summary)
        when the run ends early (module docstring, "How it ends")."""
        t0 = time.perf_counter()
        check_batch_keys(task, dataset, view_keys(task, dataset, transform))
        run = self._setup(task, dataset, resume)
        zero = self.fabric.is_global_zero
        run.logger = MetricsLogger(self.run_dir, enabled=zero, resume_step=self.step if run.resumed else None)
        run.reporter = ProgressReporter(self.cfg.max_steps, self.step, enabled=zero and self.progress)
        run.t_start = run.log_time = time.perf_counter()
        with StopSignals() as signals:  # a signal during the final save is only noted: the run is done
            try:
                stop = self._train(run, transform, callbacks, signals)
            finally:
                run.logger.close()
                run.reporter.close()
            train_s = time.perf_counter() - run.t_start
            if run.last_saved != self.step and not self._save(run) and stop is None:
                stop = _Stop(FAILED, f"diverged: the weights are not finite after step {self.step}")
            if self.sharded:
                gather_into(run.task, task)
            self.summary = self._summary(run, train_s, time.perf_counter() - t0, stop)
        if stop is not None:
            raise self._stopped(stop)
        for cb in callbacks:
            cb.on_fit_end(self, task)
        return self.summary

    # --- setup --------------------------------------------------------------------------
    def _setup(self, task: Task, dataset: Dataset, resume: bool) -> _Run:
        fabric, cfg = self.fabric, self.cfg
        if not resume and complete_checkpoints(self.run_dir):
            raise FileExistsError(
                f"{checkpoints_dir(self.run_dir)} already holds checkpoints; pass resume=True to continue "
                "that run, or choose another run directory"
            )
        if dataset.streamed:  # it splits itself across processes
            sampler = StreamOrder(dataset, self.batch_size, cfg.max_steps, cfg.seed, self.optim_cfg.accumulate)
        else:
            sampler = ResumableSampler(
                len(dataset), self.micro_batch, self.optim_cfg.accumulate, fabric.world_size, fabric.global_rank,
                cfg.seed,
            )  # fmt: skip
            if sampler.steps_per_epoch == 0:
                raise ValueError(f"the dataset has {len(dataset)} samples, fewer than one batch of {self.batch_size}")
        loader = DataLoader(
            dataset, batch_size=self.micro_batch, sampler=None if isinstance(sampler, StreamOrder) else sampler,
            num_workers=self.num_workers, drop_last=True,
            collate_fn=dataset.collate_fn,
            pin_memory=fabric.device.type == "cuda", generator=torch.Generator(),
        )  # fmt: skip
        task.train()
        if self.sharded:  # shard a copy; fit() gathers the trained weights back into `task`
            task = copy.deepcopy(task)
        if cfg.compile is True:  # before Fabric wraps it (DDP); 'auto' decides once the state is known
            require_compiler()
        module = fabric.setup_module(compiled(task) if cfg.compile is True else task)
        raw = build_optimizer(task, self.optim_cfg)
        o = self.optim_cfg
        scheduler = CosineWarmup(raw, o.warmup_steps, cfg.max_steps, o.lr, o.min_lr)
        run = _Run(task, module, fabric.setup_optimizers(raw), raw, scheduler, sampler, loader,
                   torch.Generator(device=fabric.device), dataset.skips, dataset.skips.total)  # fmt: skip
        run.resumed = resume and self._restore(run)
        if not run.resumed:
            if fabric.is_global_zero:
                clean_incomplete(self.run_dir)
            self.step = 0
            seed_rng(derive_seed(cfg.seed, fabric.global_rank))
            run.generator.manual_seed(derive_seed(cfg.seed, fabric.global_rank, 1))
        # before the first forward (and before compiling traces it): the recorded route, or one for all
        recorded = (run.numerics or {}).get("compiled") if run.resumed else None
        run.numerics = choose_numerics(fabric, run.numerics if run.resumed else None)
        self._choose_compile(run, recorded)
        run.start_step = run.log_step = self.step
        return run

    def _choose_compile(self, run: _Run, recorded: bool | None) -> None:
        """``trainer.compile`` (:mod:`~convergent.training.compiling`): an explicit setting, or on
        resume what the checkpoint recorded; a fresh ``auto`` run decides at its first batch."""
        setting = self.cfg.compile
        if setting == COMPILE_AUTO and not run.resumed:
            return  # _train_step settles it with the first batch's shapes
        if setting == COMPILE_AUTO:
            choice = CompileChoice(bool(recorded), "auto: as the checkpoint being resumed recorded")
            if choice.compiled and not self._one_plain_process:  # auto compiles after setup: see _use_compile
                choice = CompileChoice(False, "auto: eager (only one plain process compiles after its setup)")
            choice = with_compiler(choice)
        else:
            choice = CompileChoice(setting, f"trainer.compile={str(setting).lower()}")
        if recorded is not None and choice.compiled != recorded and self.fabric.is_global_zero:
            warnings.warn(f"resume: the checkpoint was written by a{' compiled' if recorded else 'n eager'} train "
                          f"step, this run's is {'compiled' if choice.compiled else 'eager'} ({choice.reason}); the "
                          "continuation will differ in the last bits")  # fmt: skip
        self._use_compile(run, choice)

    def _settle_compile(self, run: _Run, batch: dict) -> None:
        """A fresh ``auto`` run's decision, from the first (prepared) micro-batch's shapes."""
        fabric = self.fabric

        def count() -> int | None:
            try:
                return meta_step_flops(run.task, batch) * self.optim_cfg.accumulate
            except Exception:  # a task that cannot run on the meta device stays eager
                return None

        choice = decide_auto(
            device=fabric.device.type, world_size=fabric.world_size, sharded=self.sharded,
            precision=str(self.cfg.precision), route=run.numerics.get("cpu_matmul"),
            modality=run.task.backbone.modality, threads=run.numerics["threads"][fabric.global_rank], count=count,
            steps_left=self.cfg.max_steps - self.step,
        )  # fmt: skip
        self._use_compile(run, with_compiler(choice))

    @property
    def _one_plain_process(self) -> bool:
        """Fabric may wrap the task a second time (compiled) after its setup: no DDP, no FSDP."""
        return self.fabric.world_size == 1 and not self.sharded

    def _use_compile(self, run: _Run, choice: CompileChoice) -> None:
        if choice.compiled and self.cfg.compile is not True:  # auto: compiled after the setup
            assert self._one_plain_process, "auto compiles one plain process only"
            run.module = self.fabric.setup_module(compiled(run.task))
        run.compile = choice
        run.numerics["compiled"] = choice.compiled
        if self.progress and self.fabric.is_global_zero and choice.compiled:
            print(f"compiling the train step ({choice.reason}); the first step takes a minute or more", flush=True)

    def _restore(self, run: _Run) -> bool:
        """Load the newest complete checkpoint of ``run_dir`` into ``run``; False if none."""
        fabric = self.fabric
        ck = load_latest(self.run_dir, clean=fabric.is_global_zero)
        fabric.barrier()
        if ck is None:
            warnings.warn(f"resume: no checkpoint in {checkpoints_dir(self.run_dir)}; starting from step 0")
            return False
        state = ck.state
        self._check_compatible(state, run)
        if state.get("optimizer_format") == OPTIMIZER_FORMAT:
            load_full_state(run.task, run.raw_optimizer, ck.weights, state["optimizer"])
        elif self.sharded:
            raise ValueError(
                f"resume: {ck.path} was saved without FSDP; resume it with the strategy it was trained with"
            )
        else:
            run.task.load_state_dict(ck.weights, strict=True)
            run.raw_optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        self.step = run.last_saved = int(state["step"])
        if not run.sampler.exact_resume and self.step % run.sampler.steps_per_epoch:
            warnings.warn("resume: a streamed dataset cannot seek; the rest of this epoch is read in a fresh order")
        # keys added later: checkpoints written before them resume with the counts they have
        run.nonfinite = NonfiniteCount(int(state["nonfinite_steps"]), int(state.get("nonfinite_in_a_row", 0)))
        run.losses = state["losses"].tolist()
        run.last_finite_step = state.get("last_finite_step")
        run.numerics = state.get("numerics")  # what _setup reuses
        rng = state["rng"]
        if len(rng) == fabric.world_size:
            restore_rng(rng[fabric.global_rank], run.generator)
        else:
            warnings.warn(f"resume: checkpoint from {len(rng)} process(es), now {fabric.world_size}; RNGs reseeded")
            seed_rng(derive_seed(self.cfg.seed, fabric.global_rank, self.step))
            run.generator.manual_seed(derive_seed(self.cfg.seed, fabric.global_rank, self.step, 1))
        return True

    def _check_compatible(self, state: dict, run: _Run) -> None:
        now = {"global_batch": self.batch_size, "accumulate": self.optim_cfg.accumulate,
               "num_samples": run.sampler.num_samples, "seed": self.cfg.seed}  # fmt: skip
        changed = [f"{k} {state.get(k)} -> {v}" for k, v in now.items() if state.get(k) != v]
        if changed:
            warnings.warn("resume: " + ", ".join(changed) + "; the data order will not continue exactly")

    # --- training -----------------------------------------------------------------------
    def _train(self, run: _Run, transform, callbacks, signals: StopSignals) -> _Stop | None:
        """The steps up to ``max_steps``; why they ended early, or None."""
        cfg, rank = self.cfg, self.fabric.global_rank
        per_epoch = run.sampler.steps_per_epoch
        while self.step < cfg.max_steps:
            epoch, pos = divmod(self.step, per_epoch)
            run.sampler.set_epoch(epoch, pos * self.optim_cfg.accumulate)
            if not run.loader.dataset.streamed:  # (a stream's epoch is StreamOrder's)
                run.loader.dataset.set_epoch(epoch)  # items may depend on it (false images)
            run.loader.generator.manual_seed(derive_seed(cfg.seed, rank, epoch, pos))  # worker seeds
            batches = iter(run.loader)
            for _ in range(min(per_epoch - pos, cfg.max_steps - self.step)):
                values, problem = self._train_step(run, batches, transform)
                if problem is not None and cfg.nonfinite == "stop":  # the step is abandoned, not counted
                    return _Stop(FAILED, f"diverged: {problem} at step {self.step + 1}; stopping because "
                                         "trainer.nonfinite='stop'")  # fmt: skip
                self.step += 1
                metrics = self._after_step(run, values, problem)
                for cb in callbacks:
                    cb.on_step_end(self, run.task, self.step, metrics)
                stop = self._stop_after_step(run, signals)
                if stop is not None:
                    return stop
            del batches  # stop workers before the next epoch
        return None

    def _stop_after_step(self, run: _Run, signals: StopSignals) -> _Stop | None:
        """Halt as diverged, or stop on a signal (every process decides alike: the losses are
        all-reduced, and so is the signal flag)."""
        reason = divergence(run.nonfinite, self.step, self.cfg)
        if reason is not None:
            return _Stop(FAILED, reason)
        if self.step < self.cfg.max_steps and (signum := signals.agreed(self.fabric)):
            return _Stop(PREEMPTED, f"{signal_name(signum)} after step {self.step} of {self.cfg.max_steps}")
        return None

    def _train_step(self, run: _Run, batches, transform) -> tuple[dict[str, float], str | None]:
        """One optimizer step over ``accumulate`` micro-batches; returns the averaged metrics
        and, when the update was skipped, why (with ``nonfinite='stop'`` the schedule stays)."""
        fabric, acc = self.fabric, self.optim_cfg.accumulate
        sums: dict[str, torch.Tensor] = {}
        views = run.task.num_views  # augmented views of each image the task reads
        for m in range(acc):
            batch = self._prepare(next(batches), transform, run.generator, views, run.skips)
            if run.compile is None:
                self._settle_compile(run, batch)
            with fabric.no_backward_sync(run.module, enabled=m < acc - 1):
                out = run.module(batch)
                if not isinstance(out, dict) or "loss" not in out:
                    raise TypeError(f"{type(run.task).__name__}.forward must return a dict with a 'loss'")
                fabric.backward(out["loss"] / acc)
            for k, v in _scalars(out, fabric.device).items():
                sums[k] = sums[k] + v if k in sums else v
        if self.optim_cfg.clip_grad:
            norm = fabric.clip_gradients(run.module, run.optimizer, max_norm=self.optim_cfg.clip_grad,
                                         error_if_nonfinite=False)  # fmt: skip
            norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP: a DTensor
            sums["grad_norm"] = norm.detach().float().reshape(()) * acc  # same on every process
        names = sorted(sums)
        packed = fabric.all_reduce(torch.stack([sums[k] for k in names]) / acc, reduce_op="mean")
        values = dict(zip(names, packed.tolist()))
        values["lr"] = run.scheduler.lr
        problem = self._nonfinite_problem(values)
        if problem is None:
            run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        if problem is None or self.cfg.nonfinite == "skip":
            run.scheduler.step()
        return values, problem

    def _prepare(self, batch: dict, transform, generator: torch.Generator, views: int, skips: SkipLog) -> dict:
        skips.merge(batch.pop(SKIPPED, ()))  # unreadable samples a loader worker passed over
        batch = self.fabric.to_device(batch)
        return batch if transform is None else transform_batch(batch, transform, generator, views)

    def _nonfinite_problem(self, values: dict[str, float]) -> str | None:
        if not math.isfinite(values["loss"]):
            return f"non-finite loss ({values['loss']})"
        scaler = self.cfg.precision in ("16-mixed", "16")  # the grad scaler skips such steps itself
        if not scaler and not math.isfinite(values.get("grad_norm", 0.0)):
            return f"non-finite gradient norm ({values['grad_norm']})"
        return None

    def _after_step(self, run: _Run, values: dict[str, float], problem: str | None) -> dict[str, float]:
        cfg = self.cfg
        run.nonfinite.add(problem is not None)
        if problem is None:
            run.losses.append(values["loss"])
            run.last_finite_step = self.step
        elif self.fabric.is_global_zero:
            n = run.nonfinite
            warnings.warn(f"{problem} at step {self.step}: update skipped ({n.total} so far, {n.in_a_row} in a row)")
        run.task.on_step_end(self.step, cfg.max_steps)
        run.samples += self.batch_size
        metrics = {**values, "epoch": self.step / run.sampler.steps_per_epoch, "nonfinite_steps": run.nonfinite.total}
        logged = _every(self.step, cfg.log_every) or self.step == cfg.max_steps
        if logged:
            now = time.perf_counter()
            metrics["samples_per_s"] = (self.step - run.log_step) * self.batch_size / max(now - run.log_time, 1e-9)
            metrics["elapsed_s"] = now - run.t_start
            run.log_step, run.log_time = self.step, now
            run.logger.log(self.step, metrics)
        run.reporter.update(self.step, metrics, logged)
        if _every(self.step, cfg.checkpoint_every):
            self._save(run)
        return metrics

    # --- checkpoint and summary ---------------------------------------------------------
    def _save(self, run: _Run) -> bool:
        """Checkpoint the run (a collective: every process calls it; rank 0 writes). Weights that
        are not finite are not written (the last checkpoint is kept): returns False then."""
        if not self._weights_finite(run):
            if self.fabric.is_global_zero:
                warnings.warn(f"step {self.step}: the weights are not finite; no checkpoint written")
            return False
        per_epoch = run.sampler.steps_per_epoch
        if self.sharded:
            weights, optimizer = full_state(run.task, run.raw_optimizer)  # collective
        else:
            weights, optimizer = None, run.raw_optimizer.state_dict()
        state = {
            "step": self.step, "epoch": self.step // per_epoch, "batch_in_epoch": self.step % per_epoch,
            "optimizer": optimizer, "scheduler": run.scheduler.state_dict(),
            "rng": gather_rng(self.fabric, run.generator), "nonfinite_steps": run.nonfinite.total,
            "nonfinite_in_a_row": run.nonfinite.in_a_row, "last_finite_step": run.last_finite_step,
            "losses": torch.tensor(run.losses, dtype=torch.float64), "global_batch": self.batch_size,
            "accumulate": self.optim_cfg.accumulate, "num_samples": run.sampler.num_samples,
            "seed": self.cfg.seed, "world_size": self.fabric.world_size, "numerics": run.numerics,
        }  # fmt: skip
        if self.sharded:
            state["optimizer_format"] = OPTIMIZER_FORMAT
        if self.fabric.is_global_zero:
            weights = weights_for_saving(run.task) if weights is None else contiguous_weights(weights)
            save_checkpoint(self.run_dir, self.step, weights, state)
        self.fabric.barrier()
        run.last_saved = self.step
        return True

    def _weights_finite(self, run: _Run) -> bool:
        """Whether the weights are finite in every process (a collective; FSDP: every shard)."""
        finite = weights_finite(run.task)
        if self.fabric.world_size == 1:
            return finite
        flag = torch.tensor([int(finite)], device=self.fabric.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def _stopped(self, stop: _Stop) -> Diverged | Preempted:
        """The exception that ends a run stopped early, saying where its last checkpoint is."""
        where = f"last checkpoint {self.summary['checkpoint']}" if self.summary["checkpoint"] else "no checkpoint"
        if stop.status == PREEMPTED:
            return Preempted(f"{stop.reason}; {where}", self.summary)
        hint = "lower optim.lr, keep optim.clip_grad on, or raise the trainer.max_nonfinite_* limits"
        if self.cfg.nonfinite == "stop":
            hint = "lower optim.lr, keep optim.clip_grad on, or use trainer.nonfinite='skip'"
        return Diverged(f"{stop.reason}; {where}; {hint}", self.summary)

    def _summary(self, run: _Run, train_s: float, wall_s: float, stop: _Stop | None = None) -> dict:
        # skipped when the dataset was built: the same in every process; found while reading
        # (by this process's loader, merged into its dataset's log): each process its own share
        built = run.skips_at_start
        count = torch.tensor(run.skips.total - built, device=self.fabric.device)
        if self.fabric.world_size > 1:
            count = self.fabric.all_reduce(count, reduce_op="sum")
        count = built + int(count.item())
        tail = run.losses[-max(1, math.ceil(len(run.losses) / 10)) :] if run.losses else []
        done = complete_checkpoints(self.run_dir)
        summary = {
            "status": stop.status if stop else OK,
            "reason": stop.reason if stop else None,
            "steps": self.step,
            "epochs": self.step / run.sampler.steps_per_epoch,
            "final_loss": run.losses[-1] if run.losses else None,  # the last finite one
            "final_loss_step": run.last_finite_step,
            "mean_loss_last_10pct": sum(tail) / len(tail) if tail else None,
            "nonfinite_steps": run.nonfinite.total,
            "samples_per_s": run.samples / max(train_s, 1e-9),
            "wall_s": wall_s,
            "skipped_samples": count,
            "skipped_examples": [_describe_skip(s) for s in run.skips.listed[:10]],
            "world_size": self.fabric.world_size,
            "compiled": run.compile.compiled if run.compile else False,
            "compile_reason": run.compile.reason if run.compile else "no step was run",
            "run_dir": str(self.run_dir),
            "checkpoint": str(done[-1]) if done else None,
        }
        if self.fabric.is_global_zero:
            RunDir(self.run_dir).train_summary.write_text(json.dumps(summary, indent=2) + "\n")
        return summary


def _strategy(cfg):
    """DDP with ``find_unused_parameters`` (tasks leave some backbone parameters unused, e.g.
    the mask token of an MAE encoder); ``fsdp``: FSDP2 (:mod:`convergent.training.fsdp`);
    other strategies as named."""
    devices = cfg.devices
    if isinstance(devices, str):
        devices = int(devices) if devices.isdigit() else len(devices.split(",")) if "," in devices else 1
    elif isinstance(devices, (list, tuple)):
        devices = len(devices)
    if cfg.strategy == "fsdp":
        return fsdp_strategy(max(int(devices), 1) * cfg.num_nodes)
    if cfg.strategy == "ddp" or (cfg.strategy == "auto" and max(int(devices), 1) * cfg.num_nodes > 1):
        from lightning_fabric.strategies import DDPStrategy

        return DDPStrategy(find_unused_parameters=True)
    return cfg.strategy


def _check_strategy(fabric: Fabric) -> None:
    from lightning_fabric.strategies import FSDPStrategy

    if isinstance(fabric.strategy, FSDPStrategy):
        raise ValueError(
            f"strategy {type(fabric.strategy).__name__} (FSDP1) is not supported; use strategy='fsdp' (FSDP2, "
            "full-state checkpoints) or 'ddp'"
        )


def _scalars(out: dict, device: torch.device) -> dict[str, torch.Tensor]:
    """The scalar terms of a task's output as detached float32 0-d tensors."""
    found = {}
    for k, v in out.items():
        if torch.is_tensor(v) and v.numel() == 1:
            found[k] = v.detach().float().reshape(())
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            found[k] = torch.tensor(float(v), device=device)
    return found


def _describe_skip(item) -> str:
    return ": ".join(map(str, item)) if isinstance(item, (tuple, list)) else str(item)


def _every(step: int, n: int) -> bool:
    return n > 0 and step % n == 0
