"""Shared benchmark machinery (BENCHMARKS.md): ours and the peer in one process, alternating,
median of N after warm-ups; FLOPs from FlopCounterMode; peak memory of a train step measured
in a fresh subprocess per model; the machine's fp32 matmul peak measured in the same run."""

import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode


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


def matmul_peak(n: int = 2048, reps: int = 5) -> float:
    """Achieved fp32 GFLOP/s of an n³ matmul with the current thread count (best of reps)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_time(lambda: a @ b) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _time(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
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


def train_step(model: torch.nn.Module, forward: Callable[[], torch.Tensor], fused: bool = True) -> Callable[[], None]:
    """forward + backward + AdamW step on ``model``; ``forward`` returns a scalar loss. Both
    sides of a comparison get the same optimizer (fused AdamW by default)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)

    def step():
        opt.zero_grad(set_to_none=True)
        forward().backward()
        opt.step()

    return step


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
