"""collate (merging the reports of skipped samples: tests/data/test_skips.py)."""

import pytest
import torch

from convergent.data.collate import collate


def test_collate_stacks_and_concatenates():
    items = [
        {"image": torch.full((1, 2, 2), i, dtype=torch.uint8), "label": i, "w": 0.5 * i, "name": f"n{i}", "skipped": s}
        for i, s in enumerate([[], [("a", "bad")], [("b", "bad"), ("c", "bad")]])
    ]
    b = collate(items)
    assert b["image"].shape == (3, 1, 2, 2) and b["image"][2].max() == 2
    assert b["label"].dtype == torch.int64 and b["label"].tolist() == [0, 1, 2]
    assert b["w"].dtype == torch.float32 and b["w"].tolist() == [0.0, 0.5, 1.0]
    assert b["name"] == ["n0", "n1", "n2"]
    assert b["skipped"] == [("a", "bad"), ("b", "bad"), ("c", "bad")]
    with pytest.raises(KeyError, match="item 1 has keys"):
        collate([{"label": 1}, {"image": torch.zeros(1)}])
    with pytest.raises(ValueError, match="empty"):
        collate([])
