"""benchmarks/saved_activations.py: the bytes autograd saves for the backward, parameters excluded."""

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from saved_activations import saved_bytes  # noqa: E402


def test_counts_each_saved_activation_once_and_no_parameter():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(16, 4)
    # saved: x (the first Linear's weight gradient needs it), ReLU's output (16 x 8), saved by
    # ReLU and again by the second Linear but one storage, and the second Linear's weight (its
    # input gradient needs it), which is a parameter and not counted
    nbytes, count = saved_bytes(model, lambda: model(x).sum())
    assert (nbytes, count) == (16 * 4 * 4 + 16 * 8 * 4, 2)
    wide = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 3))
    assert saved_bytes(wide, lambda: wide(x).sum()) == (16 * 4 * 4 + 16 * 32 * 4, 2)
