"""Atomic, resumable checkpoints.

Layout of ``run_dir/checkpoints/``::

    step-000120/model.safetensors   task.state_dict() (contiguous CPU tensors; never pickle)
    step-000120/state.pt            optimizer, scheduler, step, data position, RNG states, ...
    step-000123.tmp/                a save in progress (or killed): ignored, cleaned
    latest                          text: name of the newest complete checkpoint

A save writes into ``step-N.tmp/``, fsyncs the files and the directory, renames it to
``step-N/`` (atomic on POSIX) and then replaces ``latest`` through a temporary file, so a
kill at any moment leaves the previous checkpoint intact. A save that fails with an I/O
error (read-only or full disk: safetensors' and ``torch.save``'s own errors become the
``OSError`` behind them) removes what it wrote and raises that ``OSError``, naming the file
and what was being saved: the previous checkpoint stays ``latest``. A checkpoint that cannot
be read raises :class:`CheckpointError`. ``state.pt`` is read with
``torch.load(weights_only=True)``: it must hold plain containers, numbers, strings and
tensors only. These functions touch the filesystem only; in a multi-process run rank 0
calls the writers and the others wait at a barrier (see ``loop.Trainer``).
"""

import errno
import os
import pickle
import re
import shutil
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from convergent.rundir import RunDir

WEIGHTS = "model.safetensors"
STATE = "state.pt"
LATEST = "latest"
KEEP = 2
"""Complete checkpoints a run keeps (the newest); one more exists while a save is under way."""
_STEP_DIR = re.compile(r"^step-(\d+)$")
_OS_ERROR = re.compile(r"os error (\d+)|code: (\d+)")


class CheckpointError(OSError):
    """A checkpoint that cannot be read: damaged, truncated, or not a checkpoint."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: its directory, step, weights and trainer state."""

    path: Path
    step: int
    weights: dict[str, torch.Tensor]
    state: dict


def checkpoints_dir(run_dir: str | Path) -> Path:
    """``run_dir/checkpoints`` (:attr:`convergent.rundir.RunDir.checkpoints`)."""
    return RunDir(run_dir).checkpoints


def weights_for_saving(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` ready for safetensors (see :func:`contiguous_weights`)."""
    return contiguous_weights(module.state_dict())


def contiguous_weights(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict as contiguous CPU tensors, with tensors that share storage (tied
    weights) cloned apart, as safetensors requires."""
    out, seen = {}, set()
    for name, value in state_dict.items():
        t = value.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            t = t.clone()
        seen.add(ptr)
        out[name] = t
    return out


def save_checkpoint(
    run_dir: str | Path, step: int, weights: dict[str, torch.Tensor], state: dict, keep: int = KEEP
) -> Path:
    """Write checkpoint ``step`` atomically, point ``latest`` at it and keep the newest
    ``keep`` complete checkpoints. Returns the checkpoint directory. On an ``OSError`` (a
    read-only or full disk) nothing of this save is left and the previous checkpoint stays
    ``latest``; the error names the file and the checkpoint."""
    root = checkpoints_dir(run_dir)
    final = root / f"step-{step:06d}"
    tmp = root / f"step-{step:06d}.tmp"
    committed = False
    try:
        root.mkdir(parents=True, exist_ok=True)
        _write_files(tmp, step, weights, state)
        if final.exists():  # the same step saved again (e.g. after a resume): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
        _write_latest(root, final.name)
        committed = True
    except OSError as e:
        if not committed:
            for path in (tmp, final):
                shutil.rmtree(path, ignore_errors=True)
            (root / (LATEST + ".tmp")).unlink(missing_ok=True)
        raise _saving(e, final, root) from e
    _prune(root, keep)
    return final


def _write_files(tmp: Path, step: int, weights: dict[str, torch.Tensor], state: dict) -> None:
    """The weights (safetensors) and the state (``torch.save``) in ``tmp``, fsynced; an I/O
    failure of either writer is raised as the ``OSError`` behind it, naming the file."""
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file(weights, str(tmp / WEIGHTS), metadata={"format": "pt", "step": str(step)})
    except SafetensorError as e:  # its I/O errors carry the errno in the text only
        m = _OS_ERROR.search(str(e))
        code = int(m.group(1) or m.group(2)) if m else errno.EIO
        raise OSError(code, os.strerror(code) if m else str(e), str(tmp / WEIGHTS)) from e
    try:
        with open(tmp / STATE, "wb") as f:
            torch.save(state, f)
    except RuntimeError as e:  # torch's writer reports a failed write as a RuntimeError; the OSError is its context
        if isinstance(e.__context__, OSError):
            raise OSError(e.__context__.errno, e.__context__.strerror, str(tmp / STATE)) from e
        raise
    for name in (WEIGHTS, STATE):
        _fsync(tmp / name)
    _fsync_dir(tmp)


def _saving(e: OSError, final: Path, root: Path) -> OSError:
    """``e`` with what was being saved, and which checkpoint is still the latest."""
    done = complete_checkpoints(root.parent)
    kept = f"{done[-1].name} is still the latest" if done else "no earlier checkpoint"
    what = f"{e.strerror or e} (saving checkpoint {final.name} of {root.parent}; {kept})"
    return OSError(e.errno, what, e.filename if e.filename is not None else str(final))


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories of ``run_dir``, oldest first (``.tmp`` ones excluded)."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if p.is_dir() and (m := _STEP_DIR.match(p.name)) and (p / WEIGHTS).is_file() and (p / STATE).is_file()
    ]
    return [p for _, p in sorted(found)]


def clean_incomplete(run_dir: str | Path) -> list[Path]:
    """Remove ``step-*.tmp`` directories left by interrupted saves; returns what was removed."""
    root = checkpoints_dir(run_dir)
    stale = sorted(root.glob("step-*.tmp")) if root.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read one checkpoint directory (weights via safetensors, state with ``weights_only``);
    :class:`CheckpointError` if it is damaged."""
    path = Path(path)
    try:
        weights = load_file(str(path / WEIGHTS), device=str(map_location))
        state = torch.load(path / STATE, map_location=map_location, weights_only=True)
        step = int(state["step"])
    except (SafetensorError, RuntimeError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
        raise _damaged(path, e) from e
    return Checkpoint(path=path, step=step, weights=weights, state=state)


def check_readable(path: str | Path) -> None:
    """A quick look at checkpoint ``path`` without loading it: the safetensors header and the
    zip directory of ``state.pt`` (what a truncated or overwritten file fails first);
    :class:`CheckpointError` if either is damaged."""
    path = Path(path)
    try:
        with safe_open(str(path / WEIGHTS), framework="pt") as f:
            f.keys()
        with zipfile.ZipFile(path / STATE) as z:
            z.namelist()
    except (SafetensorError, zipfile.BadZipFile) as e:
        raise _damaged(path, e) from e


def _damaged(path: Path, e: BaseException) -> CheckpointError:
    first = str(e).splitlines()[0] if str(e) else ""
    return CheckpointError(f"{path}: cannot be loaded ({type(e).__name__}: {first})")


def load_latest(run_dir: str | Path, map_location: str | torch.device = "cpu", clean: bool = True) -> Checkpoint | None:
    """The newest complete checkpoint of ``run_dir`` that loads (None when there is none).

    ``.tmp`` directories are ignored, and removed when ``clean`` (only one process of a run
    should clean). A complete directory is trusted even when ``latest`` was not yet updated
    (a kill between the rename and the update); one that fails to load is skipped with a
    warning in favour of the previous one; when none loads, :class:`CheckpointError`.
    """
    if clean:
        clean_incomplete(run_dir)
    failed = []
    for path in reversed(complete_checkpoints(run_dir)):
        try:
            return load_checkpoint(path, map_location)
        except OSError as e:  # a damaged or unreadable checkpoint: fall back to the previous one
            warnings.warn(f"{e}; trying an older checkpoint")
            failed.append(e)
    if failed:
        raise CheckpointError(f"{failed[0]}; no older checkpoint of {run_dir} loads either")
    return None


def readable_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of ``run_dir`` that passes :func:`check_readable` (None
    when there is none); :class:`CheckpointError` when there are some and none passes."""
    done = complete_checkpoints(run_dir)
    failed = []
    for path in reversed(done):
        try:
            check_readable(path)
            return path
        except CheckpointError as e:
            failed.append(e)
    if failed:
        raise CheckpointError(f"{failed[0]}; no older checkpoint of {run_dir} is readable either")
    return None


def _write_latest(root: Path, name: str) -> None:
    tmp = root / (LATEST + ".tmp")
    with open(tmp, "w") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / LATEST)
    _fsync_dir(root)


def _prune(root: Path, keep: int) -> None:
    for path in complete_checkpoints(root.parent)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory file descriptors
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
