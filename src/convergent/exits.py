"""Exit statuses of ``convergent`` (torch-free): what a script or a scheduler reads from a run.

    OK         0   the command did what it was asked
    FAILED     1   it ran and failed (e.g. a diverged training run: see ``summary.json``)
    USAGE      2   bad command line, config or input, refused before or while starting
    PREEMPTED 75   stopped by SIGTERM / SIGINT after writing a checkpoint: resume it
                   (75 is ``EX_TEMPFAIL`` of BSD ``sysexits.h``: try again later)
"""

OK = 0
FAILED = 1
USAGE = 2
PREEMPTED = 75
