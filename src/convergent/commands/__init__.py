"""The ``convergent`` sub-commands, one module each.

Every module provides ``parser() -> Parser`` (torch-free: it only declares arguments) and
``run(args) -> int`` (imports what the command needs, torch included, only when it runs).
Adding a verb is one module here plus one line in :data:`convergent.cli.COMMANDS`.
"""
