"""Checkpoints on a failing disk: a save that fails with an I/O error leaves nothing of itself
and the previous checkpoint ``latest``, and says which file and which checkpoint; a damaged
checkpoint is a :class:`CheckpointError`. (Faults are injected: the tests run as root.)"""

import builtins
import errno
import os

import pytest
import torch
from safetensors import SafetensorError

from convergent.training import checkpoint as ckpt

WEIGHTS = {"w": torch.ones(3)}


def _saved(tmp_path, *steps):
    for step in steps:
        ckpt.save_checkpoint(tmp_path, step, WEIGHTS, {"step": step})
    return tmp_path / "checkpoints"


def _left(root) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def test_full_disk_while_writing_weights(tmp_path, monkeypatch):
    root = _saved(tmp_path, 1)

    def full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(ckpt, "save_file", full)
    with pytest.raises(OSError) as e:
        ckpt.save_checkpoint(tmp_path, 2, WEIGHTS, {"step": 2})
    assert e.value.errno == errno.ENOSPC
    assert e.value.filename == str(root / "step-000002.tmp" / "model.safetensors")
    assert e.value.strerror == (f"No space left on device (saving checkpoint step-000002 of {tmp_path}; "
                                "step-000001 is still the latest)")  # fmt: skip
    assert _left(root) == ["latest", "step-000001"]  # no .tmp left
    assert (root / "latest").read_text().strip() == "step-000001"
    assert ckpt.load_latest(tmp_path).step == 1


def test_read_only_disk_while_writing_state(tmp_path, monkeypatch):
    """torch.save reports a failed write as a RuntimeError; the OSError behind it is raised."""
    root = _saved(tmp_path, 1)

    def read_only(obj, f):
        f.write(b"partial")
        try:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534") from None

    monkeypatch.setattr(ckpt.torch, "save", read_only)
    with pytest.raises(OSError) as e:
        ckpt.save_checkpoint(tmp_path, 2, WEIGHTS, {"step": 2})
    assert e.value.errno == errno.EROFS and e.value.filename.endswith("step-000002.tmp/state.pt")
    assert _left(root) == ["latest", "step-000001"]


def test_a_torch_error_that_is_not_io_is_not_disguised(tmp_path, monkeypatch):
    def broken(obj, f):
        raise RuntimeError("a bug")

    monkeypatch.setattr(ckpt.torch, "save", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        ckpt.save_checkpoint(tmp_path, 1, WEIGHTS, {"step": 1})


def test_full_disk_while_pointing_latest_at_it(tmp_path, monkeypatch):
    """The rename happened, ``latest`` could not be written: the new checkpoint is removed, so
    ``latest`` and the newest complete checkpoint agree."""
    root = _saved(tmp_path, 1)
    real_open = builtins.open

    def full_latest(file, mode="r", *args, **kwargs):
        if str(file).endswith("latest.tmp") and "w" in mode:
            handle = real_open(file, mode, *args, **kwargs)
            handle.close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_latest)
    with pytest.raises(OSError, match="step-000001 is still the latest"):
        ckpt.save_checkpoint(tmp_path, 2, WEIGHTS, {"step": 2})
    monkeypatch.undo()
    assert _left(root) == ["latest", "step-000001"]
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path)] == ["step-000001"]


def test_first_save_on_a_full_disk_says_there_is_none_earlier(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt, "save_file", lambda *a, **k: (_ for _ in ()).throw(
        SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")))  # fmt: skip
    with pytest.raises(OSError, match="no earlier checkpoint"):
        ckpt.save_checkpoint(tmp_path, 1, WEIGHTS, {"step": 1})
    assert _left(tmp_path / "checkpoints") == []


def test_damaged_checkpoints(tmp_path):
    root = _saved(tmp_path, 1, 2)
    (root / "step-000002" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ckpt.CheckpointError, match="step-000002: cannot be loaded"):
        ckpt.check_readable(root / "step-000002")
    assert ckpt.readable_checkpoint(tmp_path) == root / "step-000001"  # falls back, as load_latest does
    with pytest.warns(UserWarning, match="cannot be loaded"):
        assert ckpt.load_latest(tmp_path).step == 1
    state = (root / "step-000001" / "state.pt").read_bytes()
    (root / "step-000001" / "state.pt").write_bytes(state[: len(state) // 2])  # truncated
    with pytest.raises(ckpt.CheckpointError, match="no older checkpoint .* is readable either"):
        ckpt.readable_checkpoint(tmp_path)
    with pytest.warns(UserWarning), pytest.raises(ckpt.CheckpointError, match="no older checkpoint .* loads either"):
        ckpt.load_latest(tmp_path)


def test_no_checkpoint_is_not_an_error(tmp_path):
    assert ckpt.readable_checkpoint(tmp_path) is None and ckpt.load_latest(tmp_path) is None
