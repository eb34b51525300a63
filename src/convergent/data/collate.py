"""Batching dict items, and carrying unreadable-sample reports out of DataLoader workers."""

import torch


def collate(items: list[dict]) -> dict:
    """Stack a list of item dicts into one batch dict.

    Tensors are stacked ``(B, ...)``; ints become int64 ``(B,)``, floats float32 ``(B,)``;
    the ``"skipped"`` lists of ``(path, reason)`` are concatenated; anything else (e.g.
    strings) becomes a list. Every item must have the same keys.
    """
    if not items:
        raise ValueError("collate: empty list of items")
    keys = items[0].keys()
    for k, item in enumerate(items):
        if item.keys() != keys:
            raise KeyError(f"collate: item {k} has keys {sorted(item)}, item 0 has {sorted(keys)}")
    batch = {}
    for key in keys:
        values = [item[key] for item in items]
        first = values[0]
        if key == "skipped":
            batch[key] = [entry for v in values for entry in v]
        elif isinstance(first, torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(first, bool):
            batch[key] = torch.tensor(values, dtype=torch.bool)
        elif isinstance(first, int):
            batch[key] = torch.tensor(values, dtype=torch.int64)
        elif isinstance(first, float):
            batch[key] = torch.tensor(values, dtype=torch.float32)
        else:
            batch[key] = values
    return batch


def record_skipped(dataset, batch: dict) -> int:
    """Merge ``batch["skipped"]`` (found by any DataLoader worker) into ``dataset.skipped``,
    once per path; returns how many paths were new. Call it on every batch; at the end of a
    run ``len(dataset.skipped)`` counts every unreadable file met."""
    found = batch.get("skipped")
    if not found:
        return 0
    known = {path for path, _ in dataset.skipped}
    new = 0
    for path, reason in found:
        if path not in known:
            dataset.skipped.append((path, reason))
            known.add(path)
            new += 1
    return new
