"""Training callbacks of the pre-training workflow."""

from pathlib import Path

import torch

from convergent.config import PretrainConfig
from convergent.data.protocol import Dataset
from convergent.data.transforms import build_transform, denormalize
from convergent.rundir import RunDir
from convergent.tasks.base import Task
from convergent.training.callbacks import Callback
from convergent.training.loop import Trainer
from convergent.workflows.pictures import save_reconstructions


class ReconstructionCallback(Callback):
    """Saves ``reconstructions.png`` (original | masked | prediction) for a fixed batch of
    held-out images every ``trainer.visualize_every`` steps and at the end.

    Only for tasks that declare ``reconstructs`` (see ``Task``); for others it does nothing.
    The picture is drawn under a forked RNG, so the training stream of
    random numbers (masks, augmentation) is the same with and without pictures.
    """

    def __init__(self, cfg: PretrainConfig, dataset: Dataset, run_dir: Path | RunDir, count: int = 8):
        self.cfg = cfg
        self.every = cfg.trainer.visualize_every
        self.path = RunDir(run_dir).reconstructions
        n = min(count, len(dataset)) if dataset is not None else 0
        self.images = torch.stack([dataset[i]["image"] for i in range(n)]) if n else None

    def on_step_end(self, trainer: Trainer, task: Task, step: int, metrics: dict) -> None:
        # a sharded (FSDP) task runs forward only as a collective: draw at the end instead
        if self.every and step % self.every == 0 and not trainer.sharded:
            self.draw(trainer, task, f"step {step}")

    def on_fit_end(self, trainer: Trainer, task: Task) -> None:
        self.draw(trainer, task, f"step {trainer.step}")

    @torch.no_grad()
    def draw(self, trainer: Trainer, task: Task, title: str) -> Path | None:
        if self.images is None or not task.reconstructs or trainer.fabric.global_rank != 0:
            return None
        device = next(task.parameters()).device
        images = build_transform(self.cfg.data, train=False)(self.images.to(device), None)
        was_training = task.training
        task.eval()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.cfg.trainer.seed)  # the same masks in every picture
                out = task({"image": images}, return_outputs=True)
        finally:
            task.train(was_training)
        to01 = lambda x: denormalize(x.float(), self.cfg.data)  # noqa: E731
        return save_reconstructions(to01(images), out["mask_pixels"], to01(out["prediction"]), self.path, title)
