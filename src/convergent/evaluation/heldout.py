"""The held-out loss of a task with fixed randomness: the number a scaling sweep compares
across model sizes, data fractions and step budgets.

A task draws its random parts — SimMIM's and MAE's masks, BERT's masked tokens — from the
global torch RNG when the batch does not bring them (``tasks/base.py``). Here every batch is
computed under that RNG seeded from ``(seed, batch index)`` inside ``torch.random.fork_rng``:
the same held-out samples, in the same batches, get the same masks for every model, every
step budget and every call, and the caller's random stream (a training run's) is untouched.
Masks drawn at the image's resolution (SimMIM's squares of ``mask_patch_size`` pixels, as
many per image whatever the backbone's patch size) are the same even across backbones.
"""

import torch
from torch.utils.data import DataLoader, Subset

from convergent.data.protocol import SKIPPED, Dataset
from convergent.data.transforms import transform_batch
from convergent.evaluation.features import Transform, collate_for, collate_images, evaluating, model_device
from convergent.tasks.base import Task

SEED_STRIDE = 1_000_003
"""Batch ``i`` is drawn with seed ``seed * SEED_STRIDE + i`` (a prime stride keeps seeds of
different ``seed`` values apart for any realistic number of batches)."""


def heldout_subset(dataset: Dataset, limit: int | None) -> Dataset | Subset:
    """The first ``limit`` samples of ``dataset`` (all of it when None or larger)."""
    if limit is None or limit >= len(dataset):
        return dataset
    return Subset(dataset, range(limit))


def heldout_loss(task: Task, dataset: Dataset | Subset, transform: Transform, batch_size: int = 250,
                 seed: int = 0) -> dict[str, float]:  # fmt: skip
    """The loss of ``task`` on every sample of ``dataset`` in order, in eval mode without
    gradients, with fixed masks (module docstring). ``transform(images, generator, view=v)``
    makes the model input as the Trainer does (the evaluation transform for one view; a task
    that reads ``num_views > 1`` views gets them drawn from a generator seeded like the masks).

    Returns ``{"val_loss", "val_samples"}``: the mean of the batch losses weighted by their
    sizes, and the number of samples."""
    device = model_device(task)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_for(dataset, collate_images))
    total, count = 0.0, 0
    rng_devices = [device] if device.type == "cuda" else []
    with evaluating(task), torch.random.fork_rng(devices=rng_devices):
        for i, batch in enumerate(loader):
            batch_seed = seed * SEED_STRIDE + i
            batch = _inputs(batch, transform, task.num_views, device, batch_seed)
            torch.manual_seed(batch_seed)  # the task's masks
            n = next(v for v in batch.values() if torch.is_tensor(v)).shape[0]
            total += float(task(batch)["loss"]) * n
            count += n
    if count == 0:
        raise ValueError("heldout_loss got an empty dataset")
    return {"val_loss": total / count, "val_samples": count}


def _inputs(batch: dict, transform: Transform, views: int, device: torch.device, seed: int) -> dict:
    """The batch on ``device`` with its images transformed, views 2.. drawn as the Trainer draws
    them (``image2``, ...) from a generator seeded with ``seed``."""
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items() if k != SKIPPED}
    return transform_batch(batch, transform, torch.Generator(device=device).manual_seed(seed), views)
