"""Atomic, resumable checkpoints.

Layout of ``run_dir/checkpoints/``::

    step-000120/model.safetensors   task.state_dict() (contiguous CPU tensors; never pickle)
    step-000120/state.pt            optimizer, scheduler, step, data position, RNG states, ...
    step-000123.tmp/                a save in progress (or killed): ignored, cleaned
    latest                          text: name of the newest complete checkpoint

A save writes into ``step-N.tmp/``, fsyncs the files and the directory, renames it to
``step-N/`` (atomic on POSIX) and then replaces ``latest`` through a temporary file, so a
kill at any moment leaves the previous checkpoint intact. ``state.pt`` is read with
``torch.load(weights_only=True)``: it must hold plain containers, numbers, strings and
tensors only. These functions touch the filesystem only; in a multi-process run rank 0
calls the writers and the others wait at a barrier (see ``loop.Trainer``).
"""

import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from convergent.rundir import RunDir

WEIGHTS = "model.safetensors"
STATE = "state.pt"
LATEST = "latest"
_STEP_DIR = re.compile(r"^step-(\d+)$")


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
    run_dir: str | Path, step: int, weights: dict[str, torch.Tensor], state: dict, keep: int = 2
) -> Path:
    """Write checkpoint ``step`` atomically, point ``latest`` at it and keep the newest
    ``keep`` complete checkpoints. Returns the checkpoint directory."""
    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f"step-{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(weights, str(tmp / WEIGHTS), metadata={"format": "pt", "step": str(step)})
    torch.save(state, tmp / STATE)
    for name in (WEIGHTS, STATE):
        _fsync(tmp / name)
    _fsync_dir(tmp)
    if final.exists():  # the same step saved again (e.g. after a resume): replace it
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    _write_latest(root, final.name)
    _prune(root, keep)
    return final


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
    """Read one checkpoint directory (weights via safetensors, state with ``weights_only``)."""
    path = Path(path)
    weights = load_file(str(path / WEIGHTS), device=str(map_location))
    state = torch.load(path / STATE, map_location=map_location, weights_only=True)
    return Checkpoint(path=path, step=int(state["step"]), weights=weights, state=state)


def load_latest(run_dir: str | Path, map_location: str | torch.device = "cpu", clean: bool = True) -> Checkpoint | None:
    """The newest complete checkpoint of ``run_dir`` that loads (None when there is none).

    ``.tmp`` directories are ignored, and removed when ``clean`` (only one process of a run
    should clean). A complete directory is trusted even when ``latest`` was not yet updated
    (a kill between the rename and the update); one that fails to load is skipped with a
    warning in favour of the previous one.
    """
    if clean:
        clean_incomplete(run_dir)
    for path in reversed(complete_checkpoints(run_dir)):
        try:
            return load_checkpoint(path, map_location)
        except Exception as e:  # a damaged checkpoint: fall back to the previous one
            warnings.warn(f"{path}: cannot be loaded ({type(e).__name__}: {e}); trying an older checkpoint")
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
