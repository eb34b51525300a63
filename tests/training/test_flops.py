"""The FLOPs of a training step, counted by ``FlopCounterMode``, against a hand count."""

import random

import numpy as np
import torch
from torch import nn

from convergent.tasks.base import Task
from convergent.training.flops import measure_step, meta_step_flops, train_step_flops
from tests.training_helpers import MaskedTask, build


class LinearTask(Task):
    """A linear map of the flattened image, mean squared output as the loss."""

    def forward(self, batch):
        return {"loss": self.backbone(batch["image"].flatten(1)).square().mean()}


def test_a_linear_step_counts_forward_and_weight_gradient():
    b, d_in, d_out = 8, 3 * 4 * 4, 10
    task = LinearTask(nn.Linear(d_in, d_out), None)
    batch = {"image": torch.randn(b, 3, 4, 4)}
    # forward: 2 b d_in d_out; backward: the weight's gradient only (the input needs none), as much again
    assert train_step_flops(task, batch) == 4 * b * d_in * d_out
    assert all(p.grad is None for p in task.parameters())  # cleared
    assert meta_step_flops(task, batch) == 4 * b * d_in * d_out  # the same count, without computing


def test_measure_step_times_a_step_and_a_forward_pass():
    task = LinearTask(nn.Linear(48, 10), None)
    cost = measure_step(task, {"image": torch.randn(8, 3, 4, 4)}, timed_steps=1)
    assert cost.flops == 4 * 8 * 48 * 10 and cost.step_s > 0 and cost.forward_s > 0


def test_meta_step_flops_counts_like_a_real_step_and_leaves_everything_as_it_was():
    torch.manual_seed(0)
    task = build(MaskedTask)
    batch = {"image": torch.randn(4, 3, 32, 32)}
    weights = {k: v.clone() for k, v in task.state_dict().items()}
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    counted = meta_step_flops(task, batch)
    after = (random.random(), float(np.random.rand()), torch.rand(1).item())
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    assert after == (random.random(), float(np.random.rand()), torch.rand(1).item())  # no RNG was drawn
    assert all(torch.equal(weights[k], v) for k, v in task.state_dict().items())
    assert all(p.grad is None for p in task.parameters())
    # on the meta device attention runs as matrix products, which the counter sees; the CPU's
    # fused attention kernel is not counted, so a real step counts less
    assert counted > train_step_flops(task, batch) > 0
