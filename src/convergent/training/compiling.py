"""``trainer.compile``: whether a run's train step (the task's forward and loss, and the
backward autograd derives from it) runs under ``torch.compile``, and the compiled module.

* ``true``: compile. Without a working C++ compiler (the CPU code generator needs one) the run
  stops before its first step, saying so.
* ``false``: eager.
* ``"auto"`` (the default): compile where it was measured to pay, eager everywhere else.
  Compiling costs a minute or so before the first step. On an AMD EPYC with AVX-512 and the
  oneDNN matmul route (2 threads, fp32) it saved 9 % of a SimMIM Swin V2-T step, 8 % of MAE
  ViT-B, 9.5 % of CLIP B/32 and 5 % of the default preset (Swin V2 micro, 32 px), but nothing
  for BERT-base MLM (-2.4 % and +1.6 % in two runs); with AVX2 and the BLAS, 0-1.5 % for each;
  on an H100 it made the MAE ViT-B step slower (README "Performance"). So ``auto`` compiles
  when every one of these holds, and says which did not otherwise:

  - the run is one process on the CPU, in fp32 (GPU, DDP/FSDP and mixed precision: eager);
  - the CPU matmul route is oneDNN (:mod:`convergent.layers.linear`: AVX-512);
  - the task's backbone reads images;
  - the steps left would take at least :data:`AUTO_MIN_EAGER_S` eagerly, estimated from the
    step's FLOPs (:func:`~convergent.training.flops.meta_step_flops`, with the first batch's
    shapes) at :data:`NOMINAL_FLOPS_PER_THREAD` per intra-op thread; no clock is read, so the
    same run on the same machine always decides the same;
  - a C++ compiler works (one tiny function is compiled to find out; if it fails, the run
    stays eager and warns).

The decision is recorded in the checkpoints (``numerics["compiled"]``) and a resumed run takes
it again, so the continuation is bit-exact; an explicit ``true``/``false`` that differs from the
record wins, with a warning. The compiled module draws its random numbers (masks) through the
same generator calls as the eager one (inductor's ``fallback_random``), so a compiled run sees
the masks an eager run of the same seed sees; its arithmetic differs in the last bits.
"""

import functools
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from convergent.choices import compile_setting_ok

AUTO_MIN_EAGER_S = 3600.0
"""``auto`` compiles a run whose remaining steps are estimated to take at least this long
eagerly: then even the smallest saving measured for an image backbone (5 %, the default
preset) wins back three minutes, more than compiling costs, and 8–9 % wins back five."""
NOMINAL_FLOPS_PER_THREAD = 100e9
"""FLOP/s per intra-op thread of an eager fp32 train step on an AVX-512 CPU with oneDNN
(measured on an AMD EPYC, 2 threads: 88 G for the default preset, 129 G for SimMIM Swin V2-T,
135–148 G for BERT-base MLM, MAE ViT-B and CLIP B/32)."""


@dataclass(frozen=True)
class CompileChoice:
    """Whether the train step is compiled, and why (for the summary and the log)."""

    compiled: bool
    reason: str


def check_setting(value) -> None:
    """A clear error for a ``trainer.compile`` that is not true, false or 'auto'."""
    if not compile_setting_ok(value):
        raise ValueError(f"trainer.compile must be true, false or 'auto', not {value!r}")


CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def cache_per_isa() -> None:
    """Give a process whose kernels are held to another instruction set (``ATEN_CPU_CAPABILITY``,
    e.g. the AVX2 runs of ``benchmarks/*.py --isa avx2``) an inductor cache of its own, unless
    ``TORCHINDUCTOR_CACHE_DIR`` names another than torch's default. torch 2.13's cache does not tell the two apart: an
    AVX-512 process that loaded CLIP B/32 kernels an AVX2 process had cached corrupted its heap
    (``malloc(): unaligned tcache chunk detected``), and the AVX2 process that loaded AVX-512
    kernels failed an index check; each ran cleanly from a cache of its own. Call it before the
    process compiles anything."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    default = os.path.abspath(default_cache_dir())  # torch writes it into the variable when it first reads it
    if "ATEN_CPU_CAPABILITY" not in os.environ or os.environ.get(CACHE_ENV, default) != default:
        return
    os.environ[CACHE_ENV] = f"{default}-{torch.backends.cpu.get_cpu_capability().lower()}"


def compiled(task: nn.Module) -> nn.Module:
    """``task`` under ``torch.compile`` (static shapes; random draws as the eager module makes
    them; the inductor cache of this instruction set, :func:`cache_per_isa`)."""
    cache_per_isa()
    return torch.compile(task, dynamic=False, options={"fallback_random": True})


@functools.cache
def compiler_problem() -> str | None:
    """Why ``torch.compile`` cannot generate CPU code in this process (no C++ compiler, ...),
    or None when it can: one tiny function is compiled and run (seconds, once per process)."""
    cache_per_isa()
    try:
        out = torch.compile(lambda x: (x * 2.0).sin(), dynamic=False)(torch.ones(8))
        if not torch.allclose(out, torch.full((8,), 2.0).sin()):
            return "a compiled test function computed a wrong result"
    except Exception as e:  # any failure of the tool chain means: do not compile
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    return None


def decide_auto(*, device: str, world_size: int, sharded: bool, precision: str, route: str | None, modality: str,
                threads: int, count: Callable[[], int | None], steps_left: int) -> CompileChoice:  # fmt: skip
    """``auto``'s rule (module doc), without the compiler check. ``count``: the FLOPs of a step,
    or None when they cannot be counted (the run stays eager); called only when the rest holds."""
    if device != "cpu":
        return CompileChoice(False, f"auto: eager on {device} (compiling was not measured to pay there)")
    if world_size > 1 or sharded:
        return CompileChoice(False, f"auto: eager with {world_size} process(es){' under FSDP' if sharded else ''} "
                                    "(only one plain process was measured)")  # fmt: skip
    if precision not in ("32-true", "32"):
        return CompileChoice(False, f"auto: eager in {precision} (only fp32 was measured on the CPU)")
    if route != "onednn":
        return CompileChoice(False, f"auto: eager on the {route} matmul route (compiling saved 0-1.5 % there)")
    if modality != "image":
        return CompileChoice(False, f"auto: eager for a {modality} backbone (compiling BERT-base MLM saved nothing)")
    flops_per_step = count()
    if flops_per_step is None:
        return CompileChoice(False, "auto: eager (the step's FLOPs could not be counted on the meta device)")
    estimate = flops_per_step * steps_left / (NOMINAL_FLOPS_PER_THREAD * max(threads, 1))
    work = f"{steps_left} steps of {flops_per_step / 1e9:.1f} GFLOP, about {estimate / 60:.0f} min eagerly"
    if estimate < AUTO_MIN_EAGER_S:
        return CompileChoice(False, f"auto: eager ({work}, under {AUTO_MIN_EAGER_S / 60:.0f} min)")
    return CompileChoice(True, f"auto: compiled ({work})")


def with_compiler(choice: CompileChoice) -> CompileChoice:
    """``choice``, or eager with a warning when it compiles and the compiler does not work."""
    if not choice.compiled:
        return choice
    problem = compiler_problem()
    if problem is None:
        return choice
    warnings.warn(f"trainer.compile=auto: torch.compile does not work here ({problem}); training eagerly")
    return CompileChoice(False, f"auto: eager (torch.compile does not work here: {problem})")


def require_compiler() -> None:
    """For ``trainer.compile=true``: a clear error when compiling cannot work here."""
    problem = compiler_problem()
    if problem is not None:
        raise RuntimeError(
            f"trainer.compile=true, but torch.compile does not work here ({problem}); install a C++ compiler "
            "(e.g. g++) or set trainer.compile to false or 'auto'"
        )
