"""Several commands at once, one per device: each runs with ``CUDA_VISIBLE_DEVICES`` set to its
device's index, its output in a log file; a device takes the next command when its command ends
(``convergent sweep --devices N`` runs the runs of a sweep this way, each as
``convergent sweep OUT/sweep.yaml --only RUN``). A SIGTERM or Ctrl-C to this process is passed on
to the running commands (a run checkpoints on it), which are waited for."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from convergent.exits import PREEMPTED

DEVICE_VARIABLE = "CUDA_VISIBLE_DEVICES"


def dispatch(jobs: dict[str, list[str]], devices: int, log_dir: Path, poll_s: float = 1.0) -> dict[str, int]:
    """Run the command of each job (name -> argv) on one of ``devices`` devices, at most one
    per device at a time, in order; returns each job's exit status. Job ``NAME`` writes its
    output to ``log_dir/NAME.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    queue, free = list(jobs.items()), list(range(devices))
    running: dict[int, tuple[str, subprocess.Popen, object]] = {}
    codes: dict[str, int] = {}
    previous = signal.signal(signal.SIGTERM, _exit_preempted)
    try:
        while queue or running:
            while queue and free:
                name, argv = queue.pop(0)
                device = free.pop(0)
                log = open(log_dir / f"{name}.log", "ab")
                env = {**os.environ, DEVICE_VARIABLE: str(device)}
                running[device] = (name, subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT), log)
                print(f"sweep: {name} started on device {device} (log {log_dir / name}.log)", flush=True)
            time.sleep(poll_s)
            for device, (name, proc, log) in list(running.items()):
                if proc.poll() is not None:
                    codes[name] = proc.returncode
                    log.close()
                    del running[device]
                    free.append(device)
                    print(f"sweep: {name} ended with exit status {proc.returncode}", flush=True)
    finally:
        for name, proc, log in running.values():  # stopped early: the runs checkpoint and stop
            proc.send_signal(signal.SIGTERM)
        for name, proc, log in running.values():
            codes[name] = proc.wait()
            log.close()
        signal.signal(signal.SIGTERM, previous)
    return codes


def _exit_preempted(signum, frame) -> None:
    raise SystemExit(PREEMPTED)


def worker_command(config: Path, run_name: str) -> list[str]:
    """The command that runs one run of the sweep whose config is ``config``."""
    return [sys.executable, "-m", "convergent", "sweep", str(config), "--only", run_name]
