"""benchmarks/floor.py: the matrix-products-only replay of a train step does the step's FLOPs
and leaves the model alone."""

import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from floor import matmul_floor  # noqa: E402

from convergent.backbones import build_backbone  # noqa: E402


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_replay_runs_every_matrix_product_of_the_step_and_nothing_else():
    torch.manual_seed(0)
    model = build_backbone("swinv2_test", img_size=32, window_size=4)
    x = torch.randn(2, 3, 32, 32)
    opt = torch.optim.AdamW(model.parameters())

    def step():
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()

    step_flops = _flops(step)
    replay, calls = matmul_floor(step)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert calls > 0
    assert _flops(replay) == step_flops > 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
