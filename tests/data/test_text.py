"""text-lines: plain text and JSONL files with bad lines that must be skipped and counted (empty,
non-UTF-8, 1 MB, NUL, invalid JSON, missing field, bad label), lazy reads by seeking (also in
DataLoader workers), split layouts, labels, and the tokenizing collator."""

import pickle
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from convergent.data import registry
from convergent.data.text import TextCollator, TextLines, build
from convergent.data.tokenizer import train_tokenizer


def write(path: Path, *lines: bytes) -> Path:
    path.write_bytes(b"".join(lines))
    return path


@pytest.fixture()
def messy(tmp_path) -> Path:
    """10 lines, 4 usable: BOM + CRLF, empty, whitespace, latin-1, 1 MB, NUL, ok, no final newline."""
    return write(
        tmp_path / "messy.txt",
        b"\xef\xbb\xbfthe first line\r\n",  # 1: BOM dropped, CRLF stripped
        b"\n",  # 2: empty
        b"  \t \n",  # 3: whitespace
        "caf\u00e9 in latin-1\n".encode("latin-1"),  # 4: not UTF-8
        b"x" * (1 << 20) + b"\n",  # 5: 1 MB
        b"bin\x00ary\n",  # 6: NUL
        "  ünïcode ok  \n".encode(),  # 7
        "caf\u00e9 in utf-8\n".encode(),  # 8
        b"\n",  # 9: empty
        b"last, no newline",  # 10
    )


def test_bad_lines_skipped_and_counted(messy):
    ds = TextLines(messy)
    texts = [ds[i]["text"] for i in range(len(ds))]
    assert texts == ["the first line", "ünïcode ok", "café in utf-8", "last, no newline"]
    assert all(ds[i]["label"] == -1 for i in range(len(ds))) and ds.classes == []
    assert dict(ds.skip_counts) == {"empty": 3, "not UTF-8": 1, "too long": 1, "binary": 1}
    reasons = dict(ds.skipped)
    assert reasons[f"{messy}:4"].startswith("not UTF-8 (byte 0xe9")
    assert reasons[f"{messy}:5"].startswith("too long")
    assert reasons[f"{messy}:6"] == "binary (control byte 0x00 at column 4)"
    assert ds.summary() == "4 lines used, 6 skipped (3 empty, 1 not UTF-8, 1 binary, 1 too long)"


def test_long_line_limit_is_in_characters(tmp_path):
    e30 = ("\u00e9" * 30 + "\n").encode()
    path = write(tmp_path / "a.txt", b"short\n", e30, b"y" * 31 + b"\n", b"z" * 200 + b"\n", b"end\n")
    ds = TextLines(path, max_chars=30)
    assert [ds[i]["text"] for i in range(len(ds))] == ["short", "\u00e9" * 30, "end"]  # 60 bytes but 30 chars
    assert ds.skip_counts["too long"] == 2


def test_files_without_usable_lines(tmp_path):
    empty = write(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match=f"{empty}: no usable line \\(empty file\\)"):
        TextLines(empty)
    png = write(tmp_path / "image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=f"{png}: no usable line \\(\\d+ lines skipped: .*binary"):
        TextLines(png)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing.txt")):
        TextLines(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="decompress"):
        TextLines(write(tmp_path / "c.txt.gz", b"\x1f\x8b"))


def test_jsonl_fields_and_labels(tmp_path):
    path = write(
        tmp_path / "d.jsonl",
        b'{"text": "a dog", "label": "animal"}\n',
        b"{broken json\n",
        b'{"body": "no text field"}\n',
        b'["not", "an", "object"]\n',
        b'{"text": "a car", "label": "thing", "extra": 1}\n',
        b'{"text": "no label"}\n',
        b'{"text": "  ", "label": "thing"}\n',
        b'{"text": "float label", "label": 1.5}\n',
        b'{"text": "a cat", "label": "animal"}\n',
    )
    ds = TextLines(path)
    assert ds.classes == ["animal", "thing"]
    assert [ds[i] for i in range(len(ds))] == [
        {"text": "a dog", "label": 0}, {"text": "a car", "label": 1},
        {"text": "no label", "label": -1}, {"text": "a cat", "label": 0},
    ]  # fmt: skip
    assert ds.labels.tolist() == [0, 1, -1, 0]
    assert dict(ds.skip_counts) == {"invalid JSON": 1, "missing field": 2, "empty": 1, "bad label": 1}
    ints = TextLines(write(tmp_path / "i.jsonl", b'{"text": "x", "label": 2}\n{"text": "y", "label": 0}\n'))
    assert ints.classes == ["0", "1", "2"] and ints.labels.tolist() == [2, 0]
    mixed = TextLines(write(tmp_path / "m.jsonl", b'{"text": "x", "label": 2}\n{"text": "y", "label": "b"}\n'))
    assert mixed.classes == ["0", "1", "2"] and mixed.labels.tolist() == [2]  # a tie: the kind met first
    assert mixed.skipped == [(f"{tmp_path / 'm.jsonl'}:2", "bad label 'b' (a class name among integer labels)")]


def test_reindexed_when_file_changes(tmp_path):
    path = write(tmp_path / "a.txt", b"one\ntwo\n")
    assert len(TextLines(path)) == 2
    write(path, b"one\ntwo\nthree and more\n")
    assert len(TextLines(path)) == 3


def test_split_layout_and_class_union(tmp_path):
    write(tmp_path / "train.jsonl", b'{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    write(tmp_path / "test.jsonl", b'{"text": "c", "label": "z"}\n{"text": "d", "label": "x"}\n')
    (tmp_path / "notes.md").write_text("ignored")
    train, test = build("train", root=tmp_path), build("test", root=tmp_path)
    assert train.classes == test.classes == ["x", "y", "z"]  # union over splits: labels agree
    assert train.labels.tolist() == [0, 1] and test.labels.tolist() == [2, 0]
    assert train.heldout and "text-lines train: 2 lines (3 classes)" in train.source
    assert build("val", root=tmp_path)[0]["text"] == "c"  # test stands in for val
    with pytest.raises(FileNotFoundError, match="none for split 'extra'"):
        build("extra", root=tmp_path)


def test_single_file_and_flat_directory(tmp_path, messy):
    one = build("test", root=messy)
    assert not one.heldout and "every split reads" in one.source and len(one) == 4
    write(tmp_path / "more.txt", b"another line\n")
    flat = build("train", root=tmp_path)
    assert len(flat) == 5 and not flat.heldout
    assert len(build("train", root=messy, limit=2)) == 2
    with pytest.raises(ValueError, match="data.root"):
        build("train")
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        build("train", root=tmp_path / "nothing")


def test_build_scans_each_file_once(tmp_path, monkeypatch):
    from convergent.data import lines

    for k in range(20):  # more files than the index cache holds
        write(tmp_path / f"part{k:02d}.jsonl", b'{"text": "x", "label": "%d"}\n' % (k % 3))
    lines._index_cached.cache_clear()
    scanned = []
    real = lines._scan
    monkeypatch.setattr(lines, "_scan", lambda path, *a: scanned.append(path) or real(path, *a))
    ds = build("train", root=tmp_path)
    assert len(ds) == 20 and ds.classes == ["0", "1", "2"]
    assert len(scanned) == len(set(scanned)) == 20


def test_registry_builds_text_datasets(messy):
    assert registry.entry("text-lines").kind == "text"
    ds = registry.build_dataset("text-lines", "train", root=str(messy), img_size=99, in_chans=7)
    assert len(ds) == 4


def test_collator_and_workers(tmp_path):
    lines = [f'{{"text": "the dog number {i} sat", "label": "{"ab"[i % 2]}"}}\n'.encode() for i in range(12)]
    ds = TextLines(write(tmp_path / "d.jsonl", *lines))
    ds[0]  # the parent opens its handle before workers fork
    tok = train_tokenizer((ds[i]["text"] for i in range(len(ds))), vocab_size=60, min_frequency=1)
    ds.with_tokenizer(tok, max_length=6)
    assert isinstance(ds.collate_fn, TextCollator) and pickle.loads(pickle.dumps(ds.collate_fn)).max_length == 6
    batches = list(DataLoader(ds, batch_size=4, num_workers=2, collate_fn=ds.collate_fn))
    assert len(batches) == 3
    batch = batches[0]
    assert set(batch) == {"input_ids", "attention_mask", "special_tokens_mask", "label"}
    assert batch["input_ids"].shape == (4, 6) and batch["input_ids"].dtype == torch.int64
    assert batch["label"].tolist() == [0, 1, 0, 1] and batch["special_tokens_mask"].dtype == torch.bool
    texts = [tok.decode(row) for b in batches for row in b["input_ids"]]
    assert texts[5] == "the dog number 5"  # truncated to 4 pieces + cls/sep, read by a worker
    plain = next(iter(DataLoader(TextLines(tmp_path / "d.jsonl"), batch_size=2)))
    assert plain["text"] == ["the dog number 0 sat", "the dog number 1 sat"]
