"""Choices that change a run's arithmetic, recorded in its checkpoints so a resume is bit-exact.

An exact resume needs the arithmetic of the interrupted process as well as its state. Two
choices are made per process rather than by the config:

* ``cpu_matmul``: the route of fp32 CPU linears (:mod:`convergent.layers.linear`). With
  ``CONVERGENT_CPU_MATMUL=auto`` (the default) the instruction set decides (oneDNN on AVX-512,
  the BLAS elsewhere), the same in every process of a machine. The two routes agree to ~1e-6
  per product, and a kill/resume of the default preset with the other route drifted from step
  14 on (6e-8, growing to 1e-4 by step 20), so a run resumed on another kind of machine, or a
  DDP job over mixed machines, must not choose again: rank 0 decides on a fresh run (the
  variable, or the instruction set) and every process takes its choice; a resumed run takes
  the route its checkpoint recorded, whatever this machine would choose. An explicit
  ``CONVERGENT_CPU_MATMUL=onednn|blas`` naming the other route wins, with a warning that the
  continuation will not be bit-exact (the user asked for it; on a machine where the recorded
  route is slow that can be the right trade). Runs on an accelerator record no route.
* ``subnormals``: whether subnormal floats are flushed to zero (``trainer.flush_denormals``,
  :func:`flush_denormals`, set when a run starts); recorded, and a resume that differs warns.
* ``threads``: torch's intra-op threads of each process. CPU kernels split sums by thread, so
  another count changes the last bits too. They are recorded; a resume with other counts warns
  (with the ``OMP_NUM_THREADS`` that would continue exactly) but keeps them, since the
  machine itself may have changed.
"""

import warnings

import torch
from lightning_fabric import Fabric

from convergent.layers.linear import ENV, cpu_engine, requested_engine, set_cpu_engine


def choose_numerics(fabric: Fabric, recorded: dict | None) -> dict:
    """Set this run's numerics in every process and return them, to be saved in its checkpoints:
    ``{"cpu_matmul": "onednn" | "blas" | None, "threads": [threads of each rank]}``.
    ``recorded``: what the checkpoint being resumed holds (None: a fresh run, or a checkpoint
    written before the numerics were recorded). A collective: call it on every process."""
    recorded = recorded or {}
    route = _route(fabric, recorded.get("cpu_matmul"))
    threads = _threads(fabric, recorded.get("threads"))
    subnormals = subnormals_now()
    before = recorded.get("subnormals")
    if before is not None and before != subnormals and fabric.is_global_zero:
        warnings.warn(f"resume: subnormal floats are {subnormals} now, {before} when the checkpoint was written "
                      "(trainer.flush_denormals); the continuation may differ in the last bits")  # fmt: skip
    return {"cpu_matmul": route, "threads": threads, "subnormals": subnormals}


def _route(fabric: Fabric, recorded: str | None) -> str | None:
    if fabric.device.type != "cpu":
        return None
    route = _decide_route(recorded) if fabric.is_global_zero else None
    if fabric.world_size > 1:
        route = fabric.broadcast(route, src=0)
    set_cpu_engine(route)
    return route


def _decide_route(recorded: str | None) -> str:
    """Rank 0's route: the recorded one, unless the environment forces the other; else chosen now."""
    if recorded is None:
        return cpu_engine()
    requested = requested_engine()
    if requested in ("auto", recorded):
        return recorded
    warnings.warn(
        f"resume: {ENV}={requested} overrides the CPU matmul route this run was trained with "
        f"({recorded}); the continuation will not be bit-exact (unset {ENV} to keep {recorded})"
    )
    return requested


def _threads(fabric: Fabric, recorded: list[int] | None) -> list[int]:
    now = torch.get_num_threads()
    every = [now] if fabric.world_size == 1 else fabric.all_gather(torch.tensor(now)).reshape(-1).tolist()
    if recorded is not None and len(recorded) == len(every) and recorded != every and fabric.is_global_zero:
        if fabric.device.type == "cpu":
            warnings.warn(
                f"resume: {_describe(every)} torch thread(s) per process now, {_describe(recorded)} when the "
                "checkpoint was written; CPU kernels split their sums by thread, so the continuation may differ "
                f"in the last bits (OMP_NUM_THREADS={recorded[0]} would continue exactly)"
            )
    return every


def _describe(threads: list[int]) -> str:
    return str(threads[0]) if len(set(threads)) == 1 else "/".join(map(str, threads))


def flush_denormals() -> str:
    """Treat subnormal floats (below 1.2e-38 in fp32) as zero in this process's CPU arithmetic
    (FTZ/DAZ, ``torch.set_flush_denormal``); x86 cores compute on them through a slow path. The
    flag is per thread and a new thread inherits its creator's, so call this before the first
    parallel CPU operation, when the intra-op threads do not exist yet. Returns where it took:
    ``"all threads"``, ``"this thread"`` (the thread pool existed already: its other threads keep
    subnormals) or ``"unsupported"`` (a CPU without the flags)."""
    if not torch.set_flush_denormal(True):
        return "unsupported"
    return "all threads" if subnormals_now() == "flushed" else "this thread"


def subnormals_now() -> str:
    """``"flushed"`` (every intra-op thread), ``"partly flushed"`` or ``"kept"``: what this
    process's CPU arithmetic does with subnormal floats, probed by one parallel product."""
    probe = torch.full((1 << 20,), 1e-40)  # large enough to be split over every intra-op thread
    kept = int((probe * 1.0).count_nonzero())
    return "flushed" if kept == 0 else "kept" if kept == probe.numel() else "partly flushed"
