"""The image files under a folder, with what tells a changed file (size, mtime, checksum)."""

import os
from dataclasses import dataclass
from pathlib import Path

from convergent.app.errors import AppError
from convergent.data.images import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class FileStat:
    path: str
    """Absolute path."""
    size: int
    mtime_ns: int


def scan(folder: str | Path) -> list[FileStat]:
    """Every file under ``folder`` (recursively, hidden ones and symlinked folders skipped) whose
    name ends in an image extension, sorted by path. :class:`AppError` when ``folder`` is not a
    folder or holds no such file."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise AppError(f"{folder}: not a folder")
    found, others = [], 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                others += 1
                continue
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except OSError:
                continue  # vanished or a broken link: not there
            found.append(FileStat(path, st.st_size, st.st_mtime_ns))
    if not found:
        kinds = " ".join(sorted(IMAGE_EXTENSIONS))
        raise AppError(f"{folder}: no images under it ({others} other files; images are files ending in {kinds})")
    return sorted(found, key=lambda f: f.path)
