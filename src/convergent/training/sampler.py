"""Resumable, distributed data order: :class:`ResumableSampler` for map-style datasets,
:class:`StreamOrder` for streamed (iterable) ones.

One epoch is a permutation of the dataset (``torch.randperm`` seeded with ``seed + epoch``),
cut into global micro-batches of ``world_size * micro_batch`` samples; process ``rank``
takes slice ``rank`` of each. The incomplete tail is dropped, so an epoch holds a whole
number of optimizer steps. The union over processes of micro-batch ``j`` depends only on
the global micro-batch size, so one process with batch ``B`` and two with ``B / 2`` each
see the same samples at every step. Resuming starts the iteration at a micro-batch index:
the indices before it are never yielded, so their samples are never read.
"""

import torch
from torch.utils.data import Sampler

from convergent.data.protocol import StreamDataset


class ResumableSampler(Sampler[int]):
    """Indices of one process for one epoch; set the epoch (and start) before iterating."""

    exact_resume = True
    """A resume in the middle of an epoch continues the epoch's order exactly."""

    def __init__(
        self,
        num_samples: int,
        micro_batch: int,
        accumulate: int = 1,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
    ):
        self.num_samples = int(num_samples)
        self.micro_batch = int(micro_batch)
        self.world_size, self.rank = int(world_size), int(rank)
        self.seed, self.shuffle = int(seed), shuffle
        global_micro = self.micro_batch * self.world_size
        self.steps_per_epoch = self.num_samples // (global_micro * accumulate)
        self.micro_batches_per_epoch = self.steps_per_epoch * accumulate
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate epoch ``epoch`` from its micro-batch ``start`` on."""
        if not 0 <= start <= self.micro_batches_per_epoch:
            raise ValueError(f"start micro-batch {start} outside 0..{self.micro_batches_per_epoch}")
        self.epoch, self.start = int(epoch), int(start)

    def order(self) -> torch.Tensor:
        """The epoch's permutation of all sample indices (identical on every process)."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.num_samples, generator=gen)

    def __iter__(self):
        b, w = self.micro_batch, self.world_size
        # (micro_batches, world, b): row j holds global micro-batch j, column r this rank's share
        used = self.order()[: self.micro_batches_per_epoch * w * b].view(-1, w, b)
        yield from used[self.start :, self.rank].reshape(-1).tolist()

    def __len__(self) -> int:
        return (self.micro_batches_per_epoch - self.start) * self.micro_batch


class StreamOrder:
    """The data order of a streamed dataset (a :class:`~convergent.data.protocol.StreamDataset`,
    e.g. :class:`~convergent.data.shards.ShardDataset`), in the sampler's terms for the Trainer.

    The stream splits itself across processes and workers and must repeat (``repeat=True``:
    readers may hold unequal shares, and none may run dry within an epoch). An epoch is
    ``num_samples // global batch`` steps (the dataset's ``num_samples``; without one, the
    whole run); each epoch restarts the stream with ``dataset.set_epoch(epoch)``, in the run's
    ``seed``. A stream cannot seek: a resume in the middle of an epoch starts a fresh order
    (``set_epoch(-1 - position)``, a key no whole epoch uses), so it does not continue exactly.
    """

    exact_resume = False
    """A resume in the middle of an epoch reads a fresh order."""

    def __init__(self, dataset: StreamDataset, global_batch: int, max_steps: int, seed: int = 0, accumulate: int = 1):
        if not dataset.repeat:
            raise ValueError(f"a streamed dataset must repeat (repeat=True) to train on; {type(dataset).__name__} does not")
        self.dataset = dataset
        self.dataset.seed = seed
        self.num_samples = dataset.num_samples
        self.steps_per_epoch = max(self.num_samples // global_batch, 1) if self.num_samples else max(max_steps, 1)
        self.micro_batches_per_epoch = self.steps_per_epoch * accumulate

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Epoch ``epoch`` from its micro-batch ``start`` (> 0: a resume, in a fresh order; one
        key per (epoch, start), counted in micro-batches like ``start``)."""
        self.dataset.set_epoch(epoch if start == 0 else -1 - (epoch * self.micro_batches_per_epoch + start))
