"""Files written whole or not at all (torch-free, imports nothing of convergent, so every layer
may use it). A file is written under a temporary name of *this process* in the same directory,
then renamed over the target: a kill leaves the old file or the new one, and processes writing
the same file at once (the ranks of a distributed run, the workers of a parallel sweep) never
rename each other's temporary file; the last rename wins."""

import os
from pathlib import Path


def temporary_name(path: Path) -> Path:
    """``dir/.name.PID.tmp`` beside ``path``: this process's own temporary file for it."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`temporary_name` and a rename."""
    tmp = temporary_name(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
