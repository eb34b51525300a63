"""Exit statuses of ``convergent``, defined once (torch-free; ``cli.py`` and the commands use them).

=========  ====  ==================================================================================
name       code  meaning
=========  ====  ==================================================================================
OK         0     the command did what was asked
FAILED     1     a run that ran and failed: it diverged, or stopped on a non-finite loss
USAGE      2     bad input: a usage or config error, a missing or unreadable file, a read-only or
                 full output disk; one line on stderr, found before the run's work where it can be
PREEMPTED  75    stopped by a signal after writing a resumable checkpoint (``EX_TEMPFAIL`` of
                 ``sysexits.h``: try again, e.g. ``convergent pretrain --resume RUN_DIR``)
=========  ====  ==================================================================================

A Python traceback (exit status 1, from the interpreter) means a bug in convergent, never bad
input; ``CONVERGENT_DEBUG=1`` shows the traceback behind a one-line error as well.
"""

OK = 0
"""The command did what was asked."""
FAILED = 1
"""A run that ran and failed (diverged, halted on a non-finite loss)."""
USAGE = 2
"""Bad input, config or I/O: one line on stderr."""
PREEMPTED = 75
"""Stopped by a signal after writing a resumable checkpoint."""
