"""The Dataset contract: its documented defaults, every dataset class of ``convergent.data``
subclassing it, and a real batch of each holding exactly the keys it declares (plus the
``"skipped"`` bookkeeping), before and after a tokenizer is attached."""

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

import convergent.data
from convergent.data.collate import collate
from convergent.data.packing import pack_blocks
from convergent.data.pairs import read_pairs
from convergent.data.protocol import SKIPPED, Dataset, ItemList, StreamDataset
from convergent.data.registry import build_dataset
from convergent.data.shards import ShardDataset, read_shards, write_shards
from convergent.data.skips import SkipLog
from convergent.data.text import TextLines
from convergent.data.tokenizer import train_tokenizer

TEXTS = ["a red square", "a green band", "half of it is white", "grey", "almost black", "a blue dot"]


def batch_keys_of(dataset, n: int = 2) -> set[str]:
    """The keys of the first batch a DataLoader makes with the dataset's own ``collate_fn``."""
    batch = next(iter(DataLoader(dataset, batch_size=n, collate_fn=dataset.collate_fn)))
    return set(batch) - {SKIPPED}


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXTS * 5, vocab_size=60, min_frequency=1)


@pytest.fixture()
def pairs_csv(tmp_path) -> Path:
    rows = ["image,text,label"]
    for i, text in enumerate(TEXTS):
        Image.new("RGB", (10 + i, 8), (40 * i, 10, 200)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{text},{'ab'[i % 2]}")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "pairs.csv"


class Stream(StreamDataset):
    def __iter__(self):
        yield from ({"value": self.epoch} for _ in range(3))


# --- the contract's defaults ------------------------------------------------------------------
def test_defaults_are_declared():
    ds = Dataset()
    assert (ds.name, ds.batch_keys, ds.source, ds.classes, ds.heldout) == ("dataset", (), "", [], True)
    assert ds.collate_fn is collate and not ds.is_text and not ds.streamed
    assert isinstance(ds.skips, SkipLog) and ds.skips.total == 0 and ds.skipped == [] and not ds.skip_counts
    assert Dataset().skips is not ds.skips  # one log per dataset
    with pytest.raises(TypeError, match="'dataset' holds no text"):
        ds.texts()
    with pytest.raises(TypeError, match="holds no text to tokenise"):
        ds.with_tokenizer(None)
    stream = Stream()
    assert stream.streamed and not stream.repeat and stream.num_samples is None and stream.epoch == 0
    stream.set_epoch(3)
    assert stream.epoch == 3 and isinstance(stream, torch.utils.data.IterableDataset)


def test_skipped_and_skip_counts_are_views_of_the_log():
    ds = Dataset(skips=SkipLog())
    ds.skips.add("f:1", "empty")
    assert ds.skipped == [("f:1", "empty")] and ds.skip_counts == {"empty": 1}


def test_item_list_declares_its_items_keys():
    items = [{"image": torch.zeros(1, 2, 2, dtype=torch.uint8), "label": i, SKIPPED: []} for i in range(3)]
    ds = ItemList(items, classes=["a", "b", "c"])
    assert ds.batch_keys == ("image", "label") and len(ds) == 3 and ds.classes == ["a", "b", "c"]
    assert batch_keys_of(ds) == set(ds.batch_keys) and "3 items" in ds.source
    with pytest.raises(ValueError, match="at least one item"):
        ItemList([])


def test_every_dataset_class_keeps_the_contract():
    """Each dataset class defined in convergent.data subclasses the contract and declares keys
    (the base and the text base, which leave them to their subclasses, aside)."""
    found = []
    for info in pkgutil.walk_packages(convergent.data.__path__, "convergent.data."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == info.name and issubclass(cls, TorchDataset):
                found.append(cls)
    names = {cls.__name__ for cls in found}
    assert {"FashionMNIST", "ImageFolder", "ImageTextPairs", "ShardDataset", "TextLines", "PackedBlocks"} <= names
    for cls in found:
        assert issubclass(cls, Dataset), cls
        if cls not in (Dataset, StreamDataset, ItemList):
            assert cls.name != "dataset" and cls.batch_keys, cls


def test_build_dataset_names_the_dataset():
    ds = build_dataset("fashion-mnist", "test", limit=4, img_size=8)
    assert ds.name == "fashion-mnist"
    assert build_dataset("wordnet-definitions", "val", limit=4).name == "wordnet-definitions"


# --- a real batch of each dataset holds its declared keys -------------------------------------
def test_image_datasets(tmp_path):
    fmnist = build_dataset("fashion-mnist", "train", limit=4, img_size=8)
    assert fmnist.batch_keys == ("image", "label") and batch_keys_of(fmnist) == set(fmnist.batch_keys)
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        Image.new("RGB", (9, 9), (1, 2, 3)).save(tmp_path / c / "x.png")
    (tmp_path / "cat" / "bad.png").write_text("not a png")  # reported in "skipped", not a batch key
    folder = build_dataset("image-folder", "train", root=str(tmp_path), img_size=8)
    assert folder.batch_keys == ("image", "label") and batch_keys_of(folder, 3) == set(folder.batch_keys)
    assert not folder.is_text and not fmnist.is_text


def test_text_datasets_before_and_after_a_tokenizer(tmp_path, tok):
    (tmp_path / "t.txt").write_text("\n".join(TEXTS) + "\n")
    lines = TextLines(tmp_path / "t.txt")
    wordnet = build_dataset("wordnet-glosses", "train", limit=4)
    for ds in (lines, wordnet):
        assert ds.is_text and ds.batch_keys == ("text", "label") and batch_keys_of(ds) == set(ds.batch_keys)
    assert lines.with_tokenizer(tok, max_length=8) is lines
    assert set(lines.batch_keys) == {"input_ids", "attention_mask", "special_tokens_mask", "label"}
    assert batch_keys_of(lines) == set(lines.batch_keys)
    wordnet.with_tokenizer(tok, max_length=8, word_ids=True)
    assert "word_ids" in wordnet.batch_keys and batch_keys_of(wordnet) == set(wordnet.batch_keys)
    assert list(lines.texts()) == TEXTS


def test_pairs_and_emoji_before_and_after_a_tokenizer(pairs_csv, tok):
    pairs = read_pairs(pairs_csv, img_size=8)
    emoji = build_dataset("emoji", "val", limit=4, img_size=8)
    for ds in (pairs, emoji):
        assert ds.is_text and ds.batch_keys == ("image", "text", "label")
        assert batch_keys_of(ds) == set(ds.batch_keys)
        ds.with_tokenizer(tok, max_length=8)
        assert set(ds.batch_keys) == {"image", "input_ids", "attention_mask", "special_tokens_mask", "label"}
        assert batch_keys_of(ds) == set(ds.batch_keys)


def test_shards_streamed_and_read_into_memory(pairs_csv, tok, tmp_path):
    write_shards(read_pairs(pairs_csv, img_size=8), tmp_path / "shards", max_per_shard=4)
    stream = ShardDataset(tmp_path / "shards", img_size=8)
    assert stream.streamed and stream.is_text and stream.num_samples == len(TEXTS) and stream.classes == ["a", "b"]
    assert set(stream.batch_keys) == {"image", "text", "label", "key"} == batch_keys_of(stream)
    raw = ShardDataset(tmp_path / "shards", decode=False)
    assert set(raw.batch_keys) == {"image", "ext", "text", "label", "key"} == batch_keys_of(raw)
    stream.with_tokenizer(tok, max_length=8)
    assert set(stream.batch_keys) == {"image", "input_ids", "attention_mask", "special_tokens_mask", "label"}
    assert batch_keys_of(stream) == set(stream.batch_keys)
    held = read_shards(tmp_path / "shards", img_size=8)
    assert not held.streamed and batch_keys_of(held) == set(held.batch_keys) == {"image", "text", "label"}


def test_packed_blocks(tok, tmp_path):
    blocks = pack_blocks(tok, iter(TEXTS * 4), tmp_path / "blocks.bin", block_size=8)
    assert blocks.batch_keys == ("input_ids", "attention_mask", "special_tokens_mask")
    assert batch_keys_of(blocks) == set(blocks.batch_keys) and blocks.skips.total == 0
