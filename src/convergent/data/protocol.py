"""The Dataset contract.

Every dataset of :mod:`convergent.data` subclasses :class:`Dataset` (map-style) or
:class:`StreamDataset` (streamed, an ``IterableDataset``) and declares, with these defaults:

* ``batch_keys`` — the keys of a batch made by its ``collate_fn``, those a task may read
  (``("image", "label")``; text once a tokenizer is attached: ``input_ids``,
  ``attention_mask``, ...). Besides them a batch may carry :data:`SKIPPED` (bookkeeping, see
  below). A task declares the keys it reads (``Task.batch_keys``) and the Trainer refuses a
  run whose dataset does not yield them, before any step;
* ``collate_fn`` — how items become a batch (default :func:`~convergent.data.collate.collate`);
* ``name`` (the registered name; :func:`~convergent.data.registry.build_dataset` sets it),
  ``source`` (one line: what was read, from where), ``classes`` (class names in label
  order; empty when unlabelled) and ``heldout`` (False when every split reads the same
  samples, so nothing is held out for evaluation);
* ``is_text`` — items hold text: :meth:`Dataset.texts` lists it (to train a tokenizer) and
  :meth:`Dataset.with_tokenizer` makes batches of token ids;
* ``streamed`` — an iterable stream without length or random access (:class:`StreamDataset`:
  ``repeat``, ``num_samples``, ``seed``, :meth:`StreamDataset.set_epoch`, what the Trainer's
  :class:`~convergent.training.sampler.StreamOrder` drives);
* ``skips`` — one :class:`~convergent.data.skips.SkipLog` of the samples passed over. What a
  DataLoader worker finds cannot reach the parent's log directly: items carry it in a
  :data:`SKIPPED` list of ``(where, detail)``, ``collate`` joins those into the batch, and the
  consumer (the Trainer) hands them to ``dataset.skips.merge``.
"""

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import IterableDataset

from convergent.choices import FALSE_IMAGE
from convergent.data.collate import collate
from convergent.data.skips import SkipLog

IMAGE_KEYS = ("image", FALSE_IMAGE)
"""Batch keys that hold uint8 images, which the Trainer's transform turns into model input."""
SKIPPED = "skipped"
"""Batch (and item) key of the ``(where, detail)`` reports of samples passed over; not a batch key
a task reads."""


class Dataset(TorchDataset):
    """Base of every dataset: the contract of the module docstring, with its defaults."""

    name: str = "dataset"
    """Registered name (set by ``build_dataset``); the class's default otherwise."""
    batch_keys: tuple[str, ...] = ()
    """Keys of a collated batch a task may read (:data:`SKIPPED` aside). Every dataset declares its own."""
    collate_fn: Callable[[list[dict]], dict] = staticmethod(collate)
    """Items -> batch; text datasets replace it in :meth:`with_tokenizer`."""
    heldout: bool = True
    """False when every split reads the same samples (nothing is held out for evaluation)."""
    is_text: ClassVar[bool] = False
    """Items hold text: :meth:`texts` and :meth:`with_tokenizer` work."""
    streamed: ClassVar[bool] = False
    """An iterable stream (:class:`StreamDataset`): no ``len``, no random access."""

    def __init__(self, source: str = "", classes: Sequence[str] = (), skips: SkipLog | None = None):
        self.source = source
        """One line: what was read, from where."""
        self.classes: list[str] = list(classes)
        """Class names in label order; empty when unlabelled."""
        self.skips = skips if skips is not None else SkipLog()
        """The samples passed over (see :class:`~convergent.data.skips.SkipLog`)."""

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """``(where, detail)`` of the first samples passed over (``skips.listed``)."""
        return self.skips.listed

    @property
    def skip_counts(self) -> Counter:
        """Samples passed over by reason (``skips.counts``)."""
        return self.skips.counts

    def set_epoch(self, epoch: int) -> None:
        """Called by the Trainer before each epoch's loader iterator is made; items that depend on
        the epoch (image–text pairs' false images) read it. The default ignores it."""

    def texts(self) -> Iterator[str]:
        """Every text of the dataset, in order (to train a tokenizer); text datasets only."""
        raise TypeError(f"dataset {self.name!r} holds no text (is_text is False)")

    def with_tokenizer(self, tokenizer: Any, max_length: int = 512, padding: str = "longest",
                       word_ids: bool = False) -> "Dataset":  # fmt: skip
        """Collate batches of token ids made by ``tokenizer`` (and declare their keys); returns
        ``self``. Text datasets only."""
        raise TypeError(f"dataset {self.name!r} holds no text to tokenise (is_text is False)")


class StreamDataset(Dataset, IterableDataset):
    """Base of streamed datasets: iterated, never indexed; an epoch is one pass (or, with
    ``repeat``, the stream cycles forever and the consumer counts steps)."""

    streamed: ClassVar[bool] = True
    repeat: bool = False
    """Cycle epochs forever (training: readers may hold unequal shares and none may run dry)."""
    num_samples: int | None = None
    """Samples in one pass, when known (None: unknown)."""
    seed: int = 0
    """Seeds the order; the Trainer sets the run's."""
    epoch: int = 0
    """The order of the next iterator made (:meth:`set_epoch`)."""

    def set_epoch(self, epoch: int) -> None:
        """The order depends on ``epoch``: call before each epoch's loader iterator is made."""
        self.epoch = epoch


class ItemList(Dataset):
    """Item dicts held in memory (small data made by hand, tests); declares the keys of its
    items, which must all share them."""

    name = "items"

    def __init__(self, items: Sequence[dict], classes: Sequence[str] = (), source: str | None = None):
        if not items:
            raise ValueError("ItemList needs at least one item")
        super().__init__(source or f"{len(items)} items in memory", classes)
        self.items = list(items)
        self.batch_keys = tuple(k for k in self.items[0] if k != SKIPPED)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]
