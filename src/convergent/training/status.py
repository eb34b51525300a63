"""How a run ended: the ``status`` of its summary, and what ``Trainer.fit`` raises when it ends
before ``max_steps``.

    ok          every step ran (a few may have been skipped as non-finite)
    failed      halted as diverged (:mod:`convergent.training.nonfinite`): raises :class:`Diverged`
    preempted   stopped by SIGTERM / SIGINT after a checkpoint (:mod:`convergent.training.preemption`):
                raises :class:`Preempted`

Either exception carries the Trainer's summary (also in ``summary_train.json``), so a caller
can report the run without training on: no encoder is published from a failed or preempted run.
"""

from typing import ClassVar

OK = "ok"
FAILED = "failed"
PREEMPTED = "preempted"


class RunStopped(RuntimeError):
    """``fit`` ended before ``max_steps``; ``summary`` holds ``status``, ``reason`` and ``checkpoint``."""

    status: ClassVar[str]

    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary


class Diverged(RunStopped):
    """The run was halted because its steps were not finite (status ``failed``)."""

    status = FAILED


class Preempted(RunStopped):
    """The run stopped on a signal after writing a checkpoint (status ``preempted``): resume it."""

    status = PREEMPTED
