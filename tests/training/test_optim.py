"""Parameter groups (no-decay names, layer decay), AdamW construction, the warm-up + cosine
schedule and EMA updates, each checked against hand-computed values."""

import copy
import math

import pytest
import torch
from torch import nn

from convergent.config import OptimConfig
from convergent.training.ema import cosine_momentum, ema_update_
from convergent.training.optim import build_optimizer, param_groups
from convergent.training.schedule import CosineWarmup
from tests.training_helpers import build


def _group_of(groups: list[dict]) -> dict[int, dict]:
    return {id(p): g for g in groups for p in g["params"]}


def test_param_groups_weight_decay_and_layer_scales():
    task = build()  # vit_test: num_layers = depth 2 + 2 = 4
    task.backbone.blocks[0].mlp.fc2.weight.requires_grad_(False)
    groups = param_groups(task, lr=0.1, weight_decay=0.05, layer_decay=0.5)
    by_param, named = _group_of(groups), dict(task.named_parameters())
    # (weight decay, lr scale = 0.5 ** (4 - 1 - layer id)) by hand
    expected = {
        "backbone.pos_embed": (0.0, 0.125),  # 3-d, declared no-decay; embeddings = layer 0
        "backbone.cls_token": (0.0, 0.125),
        "backbone.patch_embed.proj.weight": (0.05, 0.125),
        "backbone.patch_embed.proj.bias": (0.0, 0.125),
        "backbone.blocks.0.attn.qkv.weight": (0.05, 0.25),
        "backbone.blocks.1.mlp.fc1.weight": (0.05, 0.5),
        "backbone.blocks.1.norm1.weight": (0.0, 0.5),
        "backbone.norm.weight": (0.0, 1.0),
        "head.weight": (0.05, 1.0),  # heads get the top id
        "head.bias": (0.0, 1.0),
    }
    for name, (wd, scale) in expected.items():
        g = by_param[id(named[name])]
        assert (g["weight_decay"], g["lr_scale"]) == (wd, scale), name
        assert g["lr"] == pytest.approx(0.1 * scale), name
    assert id(task.backbone.blocks[0].mlp.fc2.weight) not in by_param  # frozen: left out
    trainable = [p for p in task.parameters() if p.requires_grad]
    assert sorted(by_param) == sorted(map(id, trainable))  # every trainable parameter exactly once
    assert sum(len(g["params"]) for g in groups) == len(trainable)


def test_param_groups_without_layer_decay_are_two():
    task = build()
    groups = param_groups(task, lr=0.1, weight_decay=0.05)
    assert sorted(g["weight_decay"] for g in groups) == [0.0, 0.05]
    assert all(g["lr_scale"] == 1.0 for g in groups)
    decayed = {id(p) for g in groups if g["weight_decay"] for p in g["params"]}
    for name, p in task.named_parameters():
        assert (id(p) in decayed) == (p.ndim > 1 and name not in task.no_weight_decay()), name


def test_build_optimizer_adamw_settings():
    task = build()
    opt = build_optimizer(task, OptimConfig(lr=2e-3, weight_decay=0.1, betas=[0.8, 0.95], layer_decay=0.75))
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["fused"] is True  # CPU has a fused AdamW kernel
    assert all(g["betas"] == (0.8, 0.95) for g in opt.param_groups)
    assert max(g["lr"] for g in opt.param_groups) == pytest.approx(2e-3)
    assert min(g["lr_scale"] for g in opt.param_groups) == pytest.approx(0.75**3)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(frozen, OptimConfig())


def test_cosine_warmup_values_by_hand():
    p = nn.Parameter(torch.zeros(2))
    half = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr_scale": 1.0}, {"params": [half], "lr_scale": 0.5}])
    sched = CosineWarmup(opt, warmup_steps=4, max_steps=12, base_lr=1.0, min_lr=0.1)
    seen = []
    for _ in range(12):
        seen.append((opt.param_groups[0]["lr"], opt.param_groups[1]["lr"]))
        sched.step()
    lrs = [a for a, _ in seen]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # linear warm-up to the peak
    assert lrs[4] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 8)))  # p = 1/8
    assert lrs[7] == pytest.approx(0.55)  # p = 1/2: half-way between base and min
    assert lrs[11] == pytest.approx(0.1)  # last step runs at min_lr
    assert all(b == pytest.approx(a / 2) for a, b in seen)  # lr_scale applied
    assert all(x > y for x, y in zip(lrs[3:], lrs[4:]))  # decreasing after warm-up
    again = CosineWarmup(opt, warmup_steps=4, max_steps=12, base_lr=1.0, min_lr=0.1)
    again.load_state_dict({"steps_done": 4})
    assert opt.param_groups[0]["lr"] == pytest.approx(lrs[4])


def test_cosine_without_warmup_starts_at_peak_region():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.0)
    sched = CosineWarmup(opt, warmup_steps=0, max_steps=2, base_lr=1.0, min_lr=0.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)  # t = 1 of 2
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0)


def _ema_pair():
    torch.manual_seed(1)
    source = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    source(torch.randn(5, 3))  # non-trivial running stats
    target = copy.deepcopy(source)
    with torch.no_grad():
        for p in target.parameters():
            p.normal_()
    return target, source


def test_ema_update_against_reference():
    target, source = _ema_pair()
    ref = {n: 0.9 * t.detach().clone() + 0.1 * s.detach() for (n, t), (_, s) in
           zip(target.named_parameters(), source.named_parameters())}  # fmt: skip
    ema_update_(target, source, 0.9)
    for n, t in target.named_parameters():
        torch.testing.assert_close(t, ref[n], rtol=0, atol=1e-6)
    for (n, tb), (_, sb) in zip(target.named_buffers(), source.named_buffers()):
        assert torch.equal(tb, sb), n  # buffers copied


def test_ema_update_rejects_mismatched_modules():
    with pytest.raises(KeyError, match="only in source"):
        ema_update_(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)), 0.9)


def test_cosine_momentum():
    assert cosine_momentum(0, 100, 0.99, 1.0) == pytest.approx(0.99)
    assert cosine_momentum(50, 100, 0.99, 1.0) == pytest.approx(0.995)
    assert cosine_momentum(100, 100, 0.99, 1.0) == pytest.approx(1.0)
    assert cosine_momentum(25, 100, 0.99, 1.0) == pytest.approx(1.0 - 0.01 * (1 + math.cos(math.pi / 4)) / 2)
