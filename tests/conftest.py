"""Shared test helpers."""

import errno
import os
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


def randomize_(module: torch.nn.Module, std: float = 0.2) -> torch.nn.Module:
    """Give every parameter noticeable random values (incl. norms and biases), so a wrong
    weight mapping cannot pass a parity test by accident."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def assert_grads_match(ours: dict, ref: dict, tol: float = 1e-4) -> None:
    """Every gradient in ``ours`` matches ``ref`` to ``tol`` relative error. Gradients that are
    zero in exact arithmetic (e.g. of a key bias, which softmax ignores) are compared against
    1% of the median gradient norm instead of their own rounding-noise norm."""
    floor = 1e-2 * torch.stack([g.norm() for g in ref.values()]).median()
    for k, g in ours.items():
        assert k in ref, f"no reference gradient for {k}"
        err = (g - ref[k]).norm() / torch.maximum(ref[k].norm(), floor)
        assert err <= tol, f"{k}: relative gradient error {err:.2e}"


@pytest.fixture
def read_only(tmp_path, monkeypatch) -> Path:
    """A directory on which creating a file fails with EROFS (``os.open`` is patched: as root,
    permissions cannot make a directory unwritable)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real_open = os.open

    def fake_open(path, flags, *args, **kwargs):
        if str(path).startswith(str(ro)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    return ro
