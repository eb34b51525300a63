"""Data: datasets that yield ``{"image": uint8 (C, S, S), "label": int}`` dicts, batched
augmentation on device (``transforms``), and ``collate``. A task declares the batch keys it
needs; data produces them and imports no model code.

This ``__init__`` is torch-free (``convergent list datasets`` must stay fast); datasets are
registered in :mod:`convergent.data.registry` and imported only when built.
"""

from convergent.data.registry import build_dataset, describe, names, register_dataset

__all__ = ["build_dataset", "describe", "names", "register_dataset"]
