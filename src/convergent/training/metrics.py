"""Where training metrics go (rank 0 only): ``run_dir/metrics.jsonl`` (one JSON object per
logged step), TensorBoard (``run_dir/tensorboard``, tensorboardX) and the console (a rich
progress bar on a terminal; otherwise one plain line per logged step, so CI logs stay short).
"""

import json
import math
import sys
import time
import warnings
from pathlib import Path

from convergent.rundir import RunDir


class MetricsLogger:
    """JSONL + TensorBoard writer. ``resume_step``: keep the JSONL lines of steps up to it
    (a resumed run continues the file; lines written after the checkpoint are dropped);
    None starts a new file."""

    def __init__(self, run_dir: Path, enabled: bool = True, resume_step: int | None = None):
        self.enabled = enabled
        self.path = RunDir(run_dir).metrics
        self._file = self._writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = _lines_up_to(self.path, resume_step) if resume_step is not None else []
        self.path.write_text("".join(kept))
        self._file = open(self.path, "a")
        try:
            from tensorboardX import SummaryWriter
        except ImportError as e:
            warnings.warn(f"TensorBoard logging is off: tensorboardX does not import ({e})")
        else:
            purge = resume_step + 1 if resume_step is not None else None
            self._writer = SummaryWriter(str(RunDir(run_dir).tensorboard), purge_step=purge)

    def log(self, step: int, values: dict[str, float]) -> None:
        """Append ``values`` of ``step`` (non-finite numbers become null in JSON)."""
        if not self.enabled:
            return
        record = {"step": step, **{k: _json_number(v) for k, v in values.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._writer.add_scalar(f"train/{key}", value, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._writer is not None:
            self._writer.close()
        self._file = self._writer = None


class ProgressReporter:
    """Rich progress bar (loss, throughput, ETA) on a terminal; a plain line per logged step
    otherwise. Disabled on ranks other than 0."""

    def __init__(self, total: int, start: int, enabled: bool = True):
        self.total, self.start, self.enabled = total, start, enabled
        self._t0 = time.perf_counter()
        self._ips: float | None = None  # last measured throughput, shown between log steps
        self._bar = None
        if enabled and sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
            )  # fmt: skip
            self._task = self._bar.add_task("train", total=total, completed=start, info="")
            self._bar.start()

    def update(self, step: int, values: dict[str, float], logged: bool) -> None:
        """Advance to ``step``; print a plain line when ``logged`` and not on a terminal."""
        if not self.enabled:
            return
        self._ips = values.get("samples_per_s", self._ips)
        info = _describe({**values, "samples_per_s": self._ips} if self._ips is not None else values)
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
        elif logged:
            done = step - self.start
            rate = done / max(time.perf_counter() - self._t0, 1e-9)
            eta = (self.total - step) / rate if rate > 0 else float("nan")
            print(f"step {step}/{self.total} {info} eta {_hms(eta)}", flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _describe(values: dict[str, float]) -> str:
    parts = [f"loss {values['loss']:.4g}"] if "loss" in values else []
    if "lr" in values:
        parts.append(f"lr {values['lr']:.2e}")
    if "samples_per_s" in values:
        parts.append(f"{values['samples_per_s']:.0f} samples/s")
    return " ".join(parts)


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _json_number(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _lines_up_to(path: Path, step: int) -> list[str]:
    """Lines of an existing JSONL file whose ``step`` is at most ``step``."""
    if not path.is_file():
        return []
    kept = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line from a kill
    return kept
