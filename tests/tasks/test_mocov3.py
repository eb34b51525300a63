"""MoCo v3: the task's loss is the symmetric ``ctr`` of its parts (the loss itself, by hand and
across 2 gloo processes: ``tests/losses/test_moco.py``); the momentum encoder gets no gradient and
follows the EMA formula and the cosine schedule; the Trainer passes two different draws of
the same images and the task trains ``vit_test``; the state dict restores the momentum
encoder; the heads have MoCo v3's layout; clear errors."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convergent.backbones import build_backbone
from convergent.heads.mlp_head import MLPHead
from convergent.losses.moco import ctr
from convergent.tasks.base import top1_accuracy
from convergent.tasks.configs import MoCoV3Config
from convergent.tasks.mocov3 import MoCoV3
from convergent.tasks.registry import build_task
from convergent.tasks.teacher import cosine_momentum
from convergent.training.loop import Trainer
from convergent.training.optim import param_groups
from tests.task_helpers import train_steps
from tests.training_helpers import RegressTask, SyntheticImages, build, configs, random_transform, read_metrics

TINY = dict(hidden_dim=32, out_dim=16)


def trainer(run_dir, **cfg):
    """A small CPU Trainer."""
    batch = cfg.pop("batch_size", 4)
    return Trainer(*configs(**cfg), run_dir, batch_size=batch, progress=False)


def make(**cfg) -> MoCoV3:
    return MoCoV3(build_backbone("vit_test"), MoCoV3Config(**{**TINY, **cfg}))


def views(b: int = 4) -> dict:
    return {"image": torch.randn(b, 3, 32, 32), "image2": torch.randn(b, 3, 32, 32)}


# --- task ---------------------------------------------------------------------------------------


def test_loss_is_the_symmetric_ctr_of_its_parts():
    task = make(temperature=0.5).train()
    with torch.no_grad():
        for p in task.teacher.parameters():
            p.add_(0.1 * torch.randn_like(p))  # a teacher unlike the student
    batch = views()
    out = task(batch)
    feats = [task.backbone.pooled(task.backbone.forward_features(batch[v])) for v in ("image", "image2")]
    q1, q2 = (task.predictor(task.projector(f)) for f in feats)  # each view its own BN statistics
    tb = task.teacher["backbone"]
    k1, k2 = (task.teacher["projector"](tb.pooled(tb.forward_features(batch[v]))) for v in ("image", "image2"))
    torch.testing.assert_close(out["loss"], ctr(q1, k2, 0.5) + ctr(q2, k1, 0.5), rtol=1e-5, atol=1e-5)
    assert out["acc"].item() == top1_accuracy(q1, k2).item()
    assert set(out) == {"loss", "momentum", "acc"}


def test_momentum_encoder_gets_no_gradient_and_is_out_of_the_optimizer():
    task = make().train()
    assert not task.teacher["backbone"].training and task.teacher["projector"].training  # BN: batch stats
    assert all(not p.requires_grad for p in task.teacher.parameters())
    task(views())["loss"].backward()
    assert all(p.grad is None for p in task.teacher.parameters())
    for part in (task.backbone, task.projector, task.predictor):
        assert all(p.grad is not None for n, p in part.named_parameters() if n != "mask_token")  # unused here
    trained = {id(p) for g in param_groups(task, 1e-3, 0.1) for p in g["params"]}
    assert not any(id(p) in trained for p in task.teacher.parameters())
    assert all(id(p) in trained for p in task.backbone.parameters())
    task.eval()
    assert not task.teacher["projector"].training


def test_ema_update_and_cosine_schedule():
    task = make(momentum=0.9)
    with torch.no_grad():
        for p in [*task.backbone.parameters(), *task.projector.parameters()]:
            p.add_(torch.randn_like(p))  # the query encoder moved away
    before = {n: p.clone() for n, p in task.teacher.named_parameters()}
    student = {f"backbone.{n}": p for n, p in task.backbone.named_parameters()}
    student |= {f"projector.{n}": p for n, p in task.projector.named_parameters()}
    task.on_step_end(3, 10)
    m = 1 - (1 - 0.9) * (1 + math.cos(math.pi * 3 / 10)) / 2
    assert task.momentum.item() == pytest.approx(m)
    assert task(views())["momentum"].item() == pytest.approx(m)
    assert before.keys() == student.keys()
    for n, p in task.teacher.named_parameters():
        torch.testing.assert_close(p, m * before[n] + (1 - m) * student[n], rtol=0, atol=1e-6)
    # the schedule: 0.99 at step 0, halfway 0.995, 1 at the end
    assert cosine_momentum(0, 10, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(5, 10, 0.99) == pytest.approx(0.995)
    assert cosine_momentum(10, 10, 0.99) == 1.0
    # momentum 1: the teacher does not move
    frozen = {n: p.clone() for n, p in task.teacher.named_parameters()}
    task.on_step_end(10, 10)
    assert all(torch.equal(p, frozen[n]) for n, p in task.teacher.named_parameters())


def test_state_dict_round_trip_restores_the_momentum_encoder():
    task = make().train()
    batch = views()
    train_steps(task, batch, 2, lr=1e-2, max_steps=10)
    assert any(k.startswith("teacher.projector.") for k in task.state_dict())
    torch.manual_seed(1)
    again = make().train()
    again.load_state_dict(task.state_dict(), strict=True)
    for (n, a), (_, b) in zip(task.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), n
    assert again.momentum.item() == task.momentum.item() == pytest.approx(cosine_momentum(2, 10, 0.99))
    assert again(batch)["loss"].item() == task(batch)["loss"].item()


def test_heads_have_moco_v3_layout():
    head = MLPHead(8, 32, 16, num_layers=3)
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert all(m.bias is None for m in head if isinstance(m, nn.Linear))
    assert not head[-1].affine and head[1].affine
    assert head(torch.randn(4, 8)).shape == (4, 16)
    task = make(proj_layers=3, pred_layers=2)
    assert isinstance(task.projector[1], nn.SyncBatchNorm) and len(task.predictor) == 5
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in make(sync_bn=False).modules())


def test_clear_errors():
    with pytest.raises(ValueError, match="task 'mocov3' needs an image backbone .TextTransformer reads text"):
        MoCoV3(build_backbone("text_test"), MoCoV3Config())
    with pytest.raises(ValueError, match="temperature must be > 0"):
        make(temperature=0.0)
    with pytest.raises(ValueError, match="momentum <= momentum_end"):
        make(momentum=0.999, momentum_end=0.99)
    with pytest.raises(KeyError, match=r"lacks \['image2'\].*transform a second time"):
        make()({"image": torch.randn(2, 3, 32, 32)})


# --- with the Trainer ---------------------------------------------------------------------------


def shift_transform(images: torch.Tensor, generator: torch.Generator, view: int = 0) -> torch.Tensor:
    """uint8 → float plus one random offset per image: two draws differ by a per-image constant
    (the Trainer calls the second with ``view=1``)."""
    return images.float() / 255 + torch.rand(images.shape[0], 1, 1, 1, generator=generator, device=images.device)


class _Spy(MoCoV3):
    def forward(self, batch):
        self.seen = {k: v.clone() for k, v in batch.items() if torch.is_tensor(v)}
        return super().forward(batch)


def test_trainer_passes_two_draws_of_the_same_images(tmp_path):
    task = _Spy(build_backbone("vit_test"), MoCoV3Config(**TINY))
    trainer(tmp_path / "moco", max_steps=1).fit(task, SyntheticImages(8), shift_transform)
    diff = task.seen["image2"] - task.seen["image"]  # (B, C, H, W)
    assert (diff.flatten(1).std(dim=1) < 1e-6).all()  # same images ...
    assert (diff.flatten(1)[:, 0].abs() > 1e-4).all()  # ... different draws
    one_view = build(_KeysSpy)  # tasks without num_views get "image" alone
    trainer(tmp_path / "one", max_steps=1).fit(one_view, SyntheticImages(8), shift_transform)
    assert one_view.seen == [["image", "label"]]


class _KeysSpy(RegressTask):
    def __init__(self, backbone):
        super().__init__(backbone)
        self.seen = []

    def forward(self, batch):
        self.seen.append(sorted(batch))
        return super().forward(batch)


def smooth_images(n: int) -> SyntheticImages:
    """Upsampled 4x4 noise: images that stay recognisable under the flips and shifts of
    ``random_transform`` (pixel noise does not), so instance discrimination can be learnt."""
    data = SyntheticImages(n)
    low = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 255
    data.images = F.interpolate(low, size=32, mode="bilinear").to(torch.uint8)
    return data


def test_task_trains_with_the_trainer(tmp_path):
    task = build_task("mocov3", build_backbone("vit_test"), MoCoV3Config(**TINY, momentum=0.9))
    trainer(tmp_path / "run", max_steps=12, optim_lr=3e-3, batch_size=8).fit(task, smooth_images(16), random_transform)
    metrics = read_metrics(tmp_path / "run")
    loss = [m["loss"] for m in metrics]
    assert len(loss) == 12 and all(math.isfinite(v) for v in loss)
    assert sum(loss[-3:]) / 3 < 0.8 * sum(loss[:3]) / 3, loss  # seeds 0-2: 0.52-0.66
    assert metrics[0]["momentum"] == pytest.approx(0.9) and metrics[-1]["momentum"] > 0.99
    assert 0.0 <= metrics[-1]["acc"] <= 1.0


def test_paper_vit_options_frozen_patch_projection_and_sincos():
    """The paper's ViT: the random patch projection and the sin-cos table stay as initialised in
    the query and the momentum encoder; the rest trains and the EMA follows."""
    task = MoCoV3(build_backbone("vit_test", pos_embed="sincos", freeze_patch_embed=True, init="xavier_qkv"),
                  MoCoV3Config(**TINY, momentum=0.9)).train()  # fmt: skip
    fixed = ("patch_embed.proj.weight", "patch_embed.proj.bias", "pos_embed")
    start = {k: v.clone() for k, v in task.backbone.state_dict().items()}
    train_steps(task, views(), 2, lr=1e-2, max_steps=10)
    assert task.backbone.patch_embed.proj.weight.grad is None
    trained = {id(p) for g in param_groups(task, 1e-3, 0.1) for p in g["params"]}
    assert not any(id(p) in trained for p in task.backbone.patch_embed.parameters())
    now, teacher = task.backbone.state_dict(), task.teacher["backbone"].state_dict()
    for k in fixed:  # the EMA of a constant is the constant (to rounding: m·t + (1-m)·t, as the official update)
        assert torch.equal(now[k], start[k]), k
        torch.testing.assert_close(teacher[k], start[k], rtol=0, atol=1e-6)
    assert not torch.equal(now["blocks.0.attn.qkv.weight"], start["blocks.0.attn.qkv.weight"])
    assert not torch.equal(teacher["blocks.0.attn.qkv.weight"], start["blocks.0.attn.qkv.weight"])
