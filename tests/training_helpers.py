"""Tiny tasks, data and configs shared by the training tests and their workers (``ddp_worker.py``, ...)."""

import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convergent.backbones import build_backbone
from convergent.config import OptimConfig, TrainerConfig
from convergent.data.protocol import Dataset
from convergent.data.skips import SkipLog, reason_of
from convergent.tasks.base import Task

PATCH = 8  # vit_test: 32 px images, 8 px patches → 16 tokens of width 32


class SyntheticImages(Dataset):
    """``n`` random uint8 images (3, 32, 32) with 4 labels; ``skipped``: ``(where, detail)`` of
    samples passed over while it was built."""

    name = "synthetic-images"
    batch_keys = ("image", "label")

    def __init__(self, n: int = 48, seed: int = 0, skipped=()):
        skips = SkipLog()
        for where, detail in skipped:
            skips.add(where, reason_of(detail), detail)
        super().__init__(f"{n} random images", [str(c) for c in range(4)], skips)
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
        self.labels = torch.arange(n) % 4
        self.reads = 0  # items read (in this process)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        self.reads += 1
        return {"image": self.images[i], "label": int(self.labels[i])}


class RegressTask(Task):
    """Deterministic: pooled features → linear → one-hot label (MSE). ``nan_at_call``: the loss of
    that forward call (1-based) is NaN; ``nan_from_call``: of that call and every later one."""

    name = "regress"

    def __init__(self, backbone: nn.Module, nan_at_call: int | None = None, nan_from_call: int | None = None):
        super().__init__(backbone, None)
        self.head = nn.Linear(backbone.embed_dim, 4)
        self.nan_at_call, self.nan_from_call, self.calls = nan_at_call, nan_from_call, 0

    def forward(self, batch: dict) -> dict:
        self.calls += 1
        pred = self.head(self.backbone.pooled(self.backbone.forward_features(batch["image"])))
        loss = F.mse_loss(pred, F.one_hot(batch["label"], 4).float())
        if self.calls == self.nan_at_call or (self.nan_from_call is not None and self.calls >= self.nan_from_call):
            loss = loss * float("nan")
        return {"loss": loss, "mse": loss.detach(), "ratio": 0.5}


class MaskedTask(Task):
    """Masked patch reconstruction whose randomness comes from all three global RNGs:
    the mask ratio from python ``random``, a target offset from numpy, the mask from torch."""

    name = "masked"

    def __init__(self, backbone: nn.Module):
        super().__init__(backbone, None)
        self.head = nn.Linear(backbone.embed_dim, 3 * PATCH * PATCH)
        self.steps_seen: list[int] = []

    def forward(self, batch: dict) -> dict:
        x = batch["image"]
        patches = F.unfold(x, PATCH, stride=PATCH).transpose(1, 2)  # (B, 16, 3*8*8)
        ratio = 0.3 + 0.4 * random.random()
        offset = float(np.random.uniform(-0.1, 0.1))
        mask = torch.rand(patches.shape[:2], device=x.device) < ratio  # (B, 16)
        mask[:, 0] = True  # at least one masked patch per image
        tokens = self.backbone.forward_features(x, mask=mask)[:, 1:]  # drop the class token
        err = ((self.head(tokens) - patches - offset) ** 2).mean(-1)
        loss = (err * mask).sum() / mask.sum()
        return {"loss": loss, "masked": mask.float().mean()}

    def on_step_end(self, step: int, max_steps: int) -> None:
        self.steps_seen.append(step)


def random_transform(images: torch.Tensor, generator: torch.Generator, view: int = 0) -> torch.Tensor:
    """uint8 → [-1, 1], random horizontal flip and a random shift (roll) of up to 2 px (the same
    for every ``view`` of a multi-view task)."""
    x = images.float() / 127.5 - 1.0
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    dy, dx = torch.randint(-2, 3, (2,), generator=generator, device=x.device).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


def eval_transform(images: torch.Tensor, generator: torch.Generator, view: int = 0) -> torch.Tensor:
    return images.float() / 127.5 - 1.0


def configs(**trainer) -> tuple[TrainerConfig, OptimConfig]:
    """Small CPU configs; ``trainer`` overrides TrainerConfig fields, ``optim_*`` OptimConfig ones."""
    optim = {k[len("optim_") :]: trainer.pop(k) for k in list(trainer) if k.startswith("optim_")}
    t = dict(max_steps=8, accelerator="cpu", devices=1, log_every=1, checkpoint_every=100, seed=0)
    o = dict(lr=3e-3, min_lr=1e-4, warmup_steps=2, weight_decay=0.05, clip_grad=1.0)
    return TrainerConfig(**{**t, **trainer}), OptimConfig(**{**o, **optim})


def build(task_cls=RegressTask, **kw) -> Task:
    return task_cls(build_backbone("vit_test"), **kw)


def read_metrics(run_dir: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir: Path, keys=("loss",)) -> list[tuple]:
    return [(m["step"],) + tuple(m[k] for k in keys) for m in read_metrics(run_dir)]


def assert_weights_close(a: dict, b: dict, atol: float = 1e-6) -> None:
    """State dicts equal to ``atol``, except the attention key bias: softmax ignores it, so
    its gradient is zero in exact arithmetic and Adam turns rounding noise there into
    lr-sized steps; it is compared to 1e-5 instead (its values are noise of that size)."""
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k].clone(), b[k].clone()
        if k.endswith("attn.qkv.bias"):
            xk, yk = x.view(3, -1)[1], y.view(3, -1)[1]  # (q, k, v) thirds: the key part
            torch.testing.assert_close(xk, yk, rtol=0, atol=1e-5, msg=k)
            xk.zero_(), yk.zero_()
        torch.testing.assert_close(x, y, rtol=0, atol=atol, msg=k)


def assert_same_losses(run: Path, ref: Path, steps: int | None = None) -> None:
    """``run`` logged the losses of ``ref`` step by step (to 1e-6); with ``steps``, for steps 1..steps."""
    logged, expected = read_metrics(run), read_metrics(ref)
    if steps is not None:
        assert [m["step"] for m in logged] == list(range(1, steps + 1))
    for a, b in zip(logged, expected, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-6, (a["step"], a["loss"], b["loss"])


def shut_down_and_exit(code: int = 0) -> None:
    """End a distributed test worker with exit status ``code``: barrier, destroy the process
    group, then leave without the interpreter's teardown, where gloo's threads can still abort
    the process now and then ("terminate called without an active exception", torch 2.13) after
    every result is written."""
    import os
    import sys

    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def save_gathered(trainer, task: nn.Module, run_dir: str) -> None:
    """After ``fit`` under FSDP (which gathered the full weights back into ``task`` on every
    process): ``run_dir/gathered-RANK.pt``, for the tests to compare."""
    if trainer.sharded:
        torch.save(task.state_dict(), Path(run_dir) / f"gathered-{trainer.fabric.global_rank}.pt")


def run_worker(main) -> None:
    """A trainer test worker's command line, then :func:`shut_down_and_exit`:

        WORKER RUN_DIR DEVICES ACCUMULATE [STRATEGY [MAX_STEPS [resume]]]

    calls ``main(RUN_DIR, devices=, accumulate=, strategy=, [max_steps=,] resume=)``
    (without MAX_STEPS, ``main``'s default)."""
    import sys

    args = sys.argv[1:]
    kw = {"max_steps": int(args[4])} if len(args) > 4 else {}
    main(args[0], devices=int(args[1]), accumulate=int(args[2]), strategy=args[3] if len(args) > 3 else None,
         resume=len(args) > 5 and args[5] == "resume", **kw)  # fmt: skip
    shut_down_and_exit()


TINY_CLI = [
    "--model.backbone", "swinv2_test", "--model.overrides", "{depths: [2, 2], num_heads: [2, 4], window_size: 4}",
    "--task.simmim.mask_patch_size", "8", "--data.batch_size", "8", "--data.limit", "64",
    "--eval.knn", "false", "--eval.linear_probe", "false", "--trainer.log_every", "1",
]  # fmt: skip
"""``convergent pretrain`` options for a run of a few seconds: the default preset's SimMIM on a
tiny Swin V2 over 64 bundled Fashion-MNIST images, one metrics line per step, no evaluation."""


def wait_for_step(run_dir: Path, proc, step: int = 1, timeout: float = 120.0) -> None:
    """Until ``run_dir/metrics.jsonl`` holds ``step`` (polled every 20 ms); fails when ``proc``
    (a ``subprocess.Popen``) ends first or ``timeout`` seconds pass."""
    metrics = Path(run_dir) / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.is_file() and f'"step": {step},' in metrics.read_text():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before step {step}")
        time.sleep(0.02)
    raise AssertionError(f"no step {step} in {metrics} after {timeout} s")
