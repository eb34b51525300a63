"""Stopping a run cleanly on SIGTERM / SIGINT (what SLURM, Kubernetes and cloud schedulers send
before they preempt a job; Ctrl-C).

While :class:`StopSignals` is entered (the Trainer holds it over ``fit``), the first SIGTERM or
SIGINT only sets a flag and prints one line: the loop finishes the optimizer step it is in,
writes a checkpoint and ends the run with status ``preempted``. The handlers that were there
before are put back at once, so a second signal acts as it would have without this (SIGINT:
``KeyboardInterrupt``; SIGTERM: the process ends) and no checkpoint is written. They are put
back on leaving, too. A signal that was ignored (``SIG_IGN``, e.g. SIGINT of a background job)
stays ignored; outside the main thread nothing is installed (Python allows handlers only there).

Under DDP / FSDP a signal may reach one process only, or the processes at different steps:
:meth:`StopSignals.agreed` all-reduces the flag once per step (one single-element tensor), so
every process stops after the same step and none is left waiting in a collective.
"""

import os
import signal
import threading

import torch
import torch.distributed as dist
from lightning_fabric import Fabric

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Context manager: the first SIGTERM / SIGINT asks the run to stop after this step."""

    def __init__(self) -> None:
        self.received: int | None = None
        """The signal number received first; None while none was."""
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in SIGNALS:
            previous = signal.getsignal(sig)
            if previous is signal.SIG_IGN:
                continue
            self._previous[sig] = previous
            signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _handle(self, signum: int, frame) -> None:
        self.received = signum
        self._restore()  # a second signal stops at once
        name = signal_name(signum)
        os.write(2, f"\n{name} received: stopping after this step and saving a checkpoint "
                    f"(send {name} again to stop at once, without one)\n".encode())  # fmt: skip

    def _restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def agreed(self, fabric: Fabric) -> int | None:
        """The signal every process stops for (the largest number any received), or None to go
        on. A collective when there are several processes: call it once per step on all."""
        if fabric.world_size == 1:
            return self.received
        flag = torch.tensor([self.received or 0], device=fabric.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # one collective (Fabric's all_reduce adds a barrier)
        return int(flag.item()) or None


def signal_name(signum: int) -> str:
    """``"SIGTERM"`` for ``signal.SIGTERM``."""
    return signal.Signals(signum).name
