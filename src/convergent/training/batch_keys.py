"""Whether a dataset feeds a task: the task's declared batch keys (``Task.batch_keys``, less
``Task.optional_batch_keys``) against the dataset's (``Dataset.batch_keys``) plus the keys the
Trainer adds itself (:func:`view_keys`). Checked when ``fit`` starts, so a mismatch is one
clear error before any step, not a ``KeyError`` in the middle of one.
"""

from collections.abc import Sequence
from typing import Any

from convergent.data.protocol import Dataset
from convergent.tasks.base import Task


def view_keys(task: Task, dataset: Dataset, transform: Any) -> tuple[str, ...]:
    """The keys the Trainer adds to the dataset's batches: ``image2`` ... ``imageN`` for a task
    declaring ``num_views = N > 1``, when there is a transform to draw the views with and the
    dataset yields ``image``."""
    if transform is None or "image" not in dataset.batch_keys:
        return ()
    return tuple(f"image{v}" for v in range(2, task.num_views + 1))


def check_batch_keys(task: Task, dataset: Dataset, added_keys: Sequence[str] = ()) -> None:
    """Raise one clear error when ``dataset`` (with ``added_keys``, from the Trainer) does not
    yield every batch key ``task`` needs (``TypeError`` when either is not of the contract)."""
    if not isinstance(task, Task):
        raise TypeError(f"the Trainer trains a convergent.tasks.base.Task, not {type(task).__name__}")
    if not isinstance(dataset, Dataset):
        raise TypeError(
            f"the Trainer reads a convergent.data.protocol.Dataset (declared batch keys, collate_fn, skips), "
            f"not {type(dataset).__name__}; wrap a list of item dicts in convergent.data.protocol.ItemList"
        )
    needed = sorted(task.batch_keys)  # the optional_batch_keys are read only when there
    yielded = sorted(set(dataset.batch_keys) | set(added_keys))
    missing = [k for k in needed if k not in yielded]
    if not missing:
        return
    added = f" (with {sorted(added_keys)} added by the Trainer)" if added_keys else ""
    hint = ""
    if dataset.is_text and "text" in dataset.batch_keys:
        hint = "; its texts become token ids once a tokenizer is attached (dataset.with_tokenizer)"
    elif task.num_views > 1 and "image" not in dataset.batch_keys:
        hint = f"; the Trainer draws the {task.num_views} views of a {task.num_views}-view task from the dataset's images"
    elif task.num_views > 1 and not added_keys:
        hint = f"; the Trainer adds the further views of {task.num_views}-view tasks only when fit has a transform"
    raise ValueError(
        f"task {task.name!r} reads batch keys {needed} but dataset {dataset.name!r} yields {yielded}{added}: "
        f"missing {missing}{hint}"
    )
