"""Shared benchmark machinery (BENCHMARKS.md): ours and the peer in one process, alternating,
median of N after warm-ups; FLOPs from FlopCounterMode; peak memory of a train step (CPU: in a
fresh subprocess per model; CUDA: the allocator's high-water mark, in process); the machine's
matmul peak measured in the same run.

``--device cuda --dtype bf16`` runs both sides on the GPU under the same bf16 autocast (the
GPU rows of BENCHMARKS.md); models and inputs are built directly on the device.

``--isa native avx2`` runs the whole benchmark once per CPU instruction set, each in a fresh
interpreter (the variables must be set before torch loads), and prints one table: ``avx2``
caps PyTorch's kernels, oneDNN and MKL at AVX2 (BENCHMARKS.md: an AVX2-only machine on any x86
CPU), ``native`` leaves the machine as it is. Every row names the instruction set PyTorch's
kernels run and the fp32 linear route (``layers/linear.py``).
"""

import contextlib
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from floor import matmul_floor
from torch.utils.flop_counter import FlopCounterMode

from convergent.layers.linear import cpu_engine, onednn_mm
from convergent.training.compiling import compiled as compiled_task
from convergent.training.numerics import flush_denormals


@dataclass
class Result:
    name: str
    median_s: float
    flops: float
    peak_mb: float | None = None

    def rate(self, items: int) -> float:
        return items / self.median_s

    def gflops(self) -> float:
        return self.flops / self.median_s / 1e9


DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

ISAS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}
"""Environment of each ``--isa`` choice (read when torch, oneDNN and MKL load)."""


def matmul_peak(n: int = 2048, reps: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Achieved GFLOP/s of an n³ matmul in ``dtype`` on the default device (CPU: with the
    current thread count), best of reps. On the CPU in fp32 the best of the two libraries
    PyTorch carries (its BLAS, and oneDNN as in ``layers/linear.py``)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    products = [lambda: a @ b]
    if a.device.type == "cpu" and dtype == torch.float32 and torch.backends.mkldnn.is_available():
        products.append(lambda: onednn_mm(a, b, None))
    best = float("inf")
    for product in products:
        product()
        best = min(best, *(_time(product) for _ in range(reps)))
    return 2 * n**3 / best / 1e9


def _sync() -> None:
    if torch.get_default_device().type == "cuda":
        torch.cuda.synchronize()


def _time(fn: Callable[[], object]) -> float:
    """Wall seconds of one call; on CUDA the queued kernels are waited for on both ends."""
    _sync()
    t = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - t


def count_flops(step: Callable[[], object]) -> float:
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def alternate(steps: dict[str, Callable[[], object]], warmup: int, reps: int) -> dict[str, float]:
    """Median seconds per call of each step, calls interleaved so drift hits all alike."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    for i in range(warmup + reps):
        for name, fn in steps.items():
            dt = _time(fn)
            if i >= warmup:
                times[name].append(dt)
    return {k: statistics.median(v) for k, v in times.items()}


def train_step(
    model: torch.nn.Module, forward: Callable[[], torch.Tensor], fused: bool = True, autocast: torch.dtype | None = None
) -> Callable[[], None]:
    """forward + backward + AdamW step on ``model``; ``forward`` returns a scalar loss. Both
    sides of a comparison get the same optimizer (fused AdamW by default) and the same
    ``autocast`` dtype (None: plain fp32)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
    device_type = torch.get_default_device().type

    def step():
        opt.zero_grad(set_to_none=True)
        cast = torch.autocast(device_type, dtype=autocast) if autocast else contextlib.nullcontext()
        with cast:
            loss = forward()
        loss.backward()
        opt.step()

    return step


def cuda_peak_mb(step: Callable[[], None]) -> float:
    """Peak CUDA memory of two train steps above what is allocated before them (weights,
    inputs, anything built earlier): activations, gradients and optimizer states."""
    gc.collect()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def reset_peak_rss() -> None:
    """Reset the kernel's RSS high-water mark (Linux ``clear_refs`` 5). A child started by
    fork+exec otherwise inherits its parent's ``ru_maxrss``."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """Peak resident memory since the last :func:`reset_peak_rss` (MB)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure_memory_subprocess(script: str, case: str, side: str, args: list[str]) -> float | None:
    """Run ``script --memory case side`` in a fresh interpreter; it prints JSON {"peak_mb": ..}:
    the peak RSS of two train steps above the RSS after building the model (weights, input)."""
    cmd = [sys.executable, script, "--memory", case, side, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)["peak_mb"]
    print(out.stderr[-2000:], file=sys.stderr)
    return None


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep] + [line(r) for r in rows])


# --- one driver for every side-by-side benchmark script ---------------------------------------


@dataclass
class Case:
    """What a benchmark case builds: both models and a loss closure for each."""

    ours: torch.nn.Module
    peer: torch.nn.Module
    loss_ours: Callable[[], torch.Tensor]
    loss_peer: Callable[[], torch.Tensor]
    compiled_loss: Callable[[Callable], Callable[[], torch.Tensor]] | None = None
    """Given ``torch.compile(ours)``, a loss closure calling it (for ``--compile``)."""
    unit: str = "img"
    """What the throughput counts (``img``, ``tokens``)."""
    items_per_sample: int = 1
    """Units per batch element (text: the sequence length)."""


def _memory_main(cases: dict, case: str, side: str, batch: int, autocast: torch.dtype | None) -> None:
    built = cases[case][1](batch)
    model, fwd = (built.ours, built.loss_ours) if side == "ours" else (built.peer, built.loss_peer)
    step = train_step(model, fwd, autocast=autocast)
    gc.collect()
    base = current_rss_mb()  # weights, inputs and the interpreter
    reset_peak_rss()
    step()
    step()
    print(json.dumps({"peak_mb": peak_rss_mb() - base}))


def _run_case(cases: dict, case: str, script: str, args) -> list[list[str]]:
    """Rows for one case, timed side by side, alternating: ours and HF with the same optimizer
    (fused AdamW: the model-side comparison), HF with ``torch.optim.AdamW()`` defaults (the
    BENCHMARKS.md peer recipe), and ours under ``torch.compile`` with ``--compile``."""
    label, build = cases[case]
    built = build(args.batch)
    cast = DTYPES[args.dtype]
    steps = {"ours": train_step(built.ours, built.loss_ours, autocast=cast)}
    steps["HF"] = train_step(built.peer, built.loss_peer, autocast=cast)
    cuda = torch.get_default_device().type == "cuda"
    peaks = {k: cuda_peak_mb(steps[k]) for k in steps} if cuda and not args.no_memory else {}  # before any other step
    steps["HF, default AdamW"] = train_step(built.peer, built.loss_peer, fused=False, autocast=cast)
    if not args.no_floor:
        for side in ("ours", "HF"):
            steps[f"{side}, matrix products only"] = matmul_floor(steps[side])[0]
    if args.compile and built.compiled_loss is not None:
        cpu_engine()  # the fp32 linear route (layers/linear.py) is chosen eagerly, never while tracing
        compiled = compiled_task(built.ours)  # as the trainer compiles it (convergent.training.compiling)
        steps["ours, compiled"] = train_step(built.ours, built.compiled_loss(compiled), autocast=cast)
        steps["ours, compiled"]()  # compile outside the timing
    # each side's own FLOPs: they may differ (e.g. MLM: our LM head runs on the masked tokens only)
    flops = {"ours": count_flops(steps["ours"]), "HF": count_flops(steps["HF"])}
    med = alternate(steps, args.warmup, args.reps)
    res = {k: Result(k, med[k], flops["HF" if k.startswith("HF") else "ours"]) for k in steps}
    res = dict(sorted(res.items(), key=lambda kv: kv[0].endswith("matrix products only")))  # floors last
    for k, mb in peaks.items():
        res[k].peak_mb = mb
    if not args.no_memory and not cuda:
        for k, side in (("ours", "ours"), ("HF", "hf")):
            res[k].peak_mb = measure_memory_subprocess(script, case, side, ["--batch", str(args.batch), "--dtype", args.dtype])
    rows = []
    where = _machine_label()
    for k, r in res.items():
        rows.append(
            [
                label,
                where,
                k,
                f"{r.rate(args.batch * built.items_per_sample):.2f} {built.unit}/s",
                f"{res['HF'].median_s / r.median_s:.2f}x",
                f"{res['HF, default AdamW'].median_s / r.median_s:.2f}x",
                f"{r.flops / 1e9:.0f}",
                f"{r.gflops():.0f} ({r.gflops() / args.peak:.0%})",
                f"{r.peak_mb:.0f} MB" if r.peak_mb is not None else "",
            ]
        )
    return rows


def _machine_label() -> str:
    """``AVX512, onednn``: the instruction set of PyTorch's CPU kernels and the fp32 linear route;
    the device name on a GPU."""
    if torch.get_default_device().type == "cuda":
        return torch.cuda.get_device_name()
    return f"{torch.backends.cpu.get_cpu_capability()}, {cpu_engine()}"


def _without_isa(argv: list[str]) -> list[str]:
    """The command line minus ``--isa`` and its values."""
    out, skipping = [], False
    for a in argv:
        if a == "--isa":
            skipping = True
            continue
        if skipping and not a.startswith("--"):
            continue
        skipping = False
        out.append(a)
    return out


def _run_isas(script: str, isas: list[str]) -> list[list[str]]:
    """Run ``script`` once per instruction set in a fresh interpreter; its rows, in order."""
    rows = []
    for isa in isas:
        cmd = [sys.executable, script, *_without_isa(sys.argv[1:]), "--rows-json"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, **ISAS[isa]})
        got = [json.loads(line)["rows"] for line in out.stdout.splitlines() if line.startswith('{"rows"')]
        print("\n".join(line for line in out.stdout.splitlines() if not line.startswith('{"rows"')))
        if out.returncode or not got:
            print(out.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"--isa {isa}: the benchmark failed (exit {out.returncode})")
        rows += got[0]
    return rows


HEADER = ["train step", "CPU ISA, fp32 route / device", "run", "throughput", "vs HF", "vs HF default AdamW",
          "GFLOP/step", "GFLOP/s (of peak)", "peak mem"]  # fmt: skip


def benchmark_main(cases: dict, script: str, doc: str) -> None:
    """Command line of a benchmark script: ``cases`` maps a name to ``(label, build(batch) -> Case)``."""
    import argparse

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", choices=sorted(cases), action="append", help="default: all")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda (models and inputs are built there)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="autocast dtype of both sides")
    p.add_argument("--no-memory", action="store_true", help="skip the per-model memory subprocesses")
    p.add_argument("--no-floor", action="store_true", help="skip the matrix-products-only replays (floor.py)")
    p.add_argument("--compile", action="store_true", help="also time ours under torch.compile (minutes to compile)")
    p.add_argument("--isa", nargs="+", choices=sorted(ISAS), help="run once per CPU instruction set (module doc)")
    p.add_argument("--memory", nargs=2, metavar=("CASE", "SIDE"), help=argparse.SUPPRESS)
    p.add_argument("--rows-json", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--keep-denormals", action="store_true",
                   help="compute on subnormal floats (PyTorch's default) instead of flushing them to zero, as the trainer does")
    args = p.parse_args()
    if args.isa:
        if args.device != "cpu":
            p.error("--isa applies to CPU runs only")
        print(table(_run_isas(script, args.isa), HEADER))
        return
    torch.set_num_threads(args.threads)
    # before any parallel operation, so that every intra-op thread inherits it (numerics.py)
    flushed = "kept" if args.keep_denormals else f"flushed ({flush_denormals()})"
    torch.manual_seed(0)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda, but torch.cuda.is_available() is False")
    if device.type != "cpu":
        # (the CPU is the default already; under set_default_device("cpu") torch 2.13's
        # compiled Swin backward corrupts the heap, so it is not set there)
        torch.set_default_device(device)
    if args.memory:
        return _memory_main(cases, *args.memory, args.batch, DTYPES[args.dtype])
    peak_dtype = DTYPES[args.dtype] or torch.float32
    n = 8192 if device.type == "cuda" else 2048
    args.peak = matmul_peak(n, reps=10 if device.type == "cuda" else 5, dtype=peak_dtype)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{args.threads} threads, {_machine_label()}"
    print(f"torch {torch.__version__}, {where}, {args.dtype}: matmul peak {args.peak:.0f} GFLOP/s ({n}^3, {peak_dtype}); "
          f"subnormal floats {flushed}")
    rows = [row for c in (args.case or list(cases)) for row in _run_case(cases, c, script, args)]
    if args.rows_json:
        print(json.dumps({"rows": rows}))
        return
    print(table(rows, HEADER))
