"""image-text pairs: CSV/TSV/JSONL/JSON files with several captions per image, rows and images
that must be skipped and counted (empty caption, missing / empty / corrupt / truncated image,
bad rows and labels), decoding, caption choice, split layouts, and the tokenizing collator."""

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from convergent.data import pairs, registry
from convergent.data.pairs import ImageTextPairs, PairsCollator, build, read_pairs
from convergent.data.pairs import read_rows as real_read_rows
from convergent.data.tokenizer import train_tokenizer


def png(path: Path, color, size=(12, 8), mode="RGB") -> Path:
    Image.new(mode, size, color).save(path)
    return path


@pytest.fixture()
def images(tmp_path) -> Path:
    """a.png (RGBA, transparent left half), b.jpg, c.png (L), d.png, corrupt.png, empty.png, trunc.png."""
    a = Image.new("RGBA", (16, 16), (255, 0, 0, 255))
    a.paste((0, 0, 255, 0), (0, 0, 8, 16))  # transparent blue: must come out white
    a.save(tmp_path / "a.png")
    Image.new("RGB", (20, 10), (0, 200, 0)).save(tmp_path / "b.jpg", quality=95)
    png(tmp_path / "c.png", 90, mode="L")
    png(tmp_path / "d.png", (1, 2, 3))
    (tmp_path / "corrupt.png").write_bytes(b"this is not an image at all")
    (tmp_path / "empty.png").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    (tmp_path / "trunc.png").write_bytes(buf.getvalue()[:300])  # header fine, data cut off
    return tmp_path


CSV = """image,text,label
a.png,a red square,shape
a.png,half of it is white,shape
b.jpg,a green band,colour
c.png,,colour
a.png,a red square,shape
missing.png,not here,shape
corrupt.png,garbage bytes,shape
empty.png,nothing inside,colour
d.png,almost black,colour
d.png,a conflicting row,shape
c.png,grey,colour
b.jpg,too,many,cells
"""


def test_csv_several_captions_and_skips(images):
    (images / "pairs.csv").write_text(CSV)
    ds = read_pairs(images / "pairs.csv")
    # first appearance with a usable caption (c.png's first row has none), duplicates dropped
    assert [Path(p).name for p in ds.paths] == ["a.png", "b.jpg", "d.png", "c.png"]
    assert ds.captions == [["a red square", "half of it is white"], ["a green band"], ["almost black"], ["grey"]]
    assert ds.classes == ["colour", "shape"] and ds.labels.tolist() == [1, 0, 0, 0]
    assert dict(ds.skip_counts) == {
        "empty caption": 1, "bad row": 1, "conflicting label": 1,
        "missing image": 1, "not an image": 1, "empty file": 1,
    }  # fmt: skip
    reasons = dict(ds.skipped)
    assert reasons[f"{images / 'pairs.csv'}:5"] == "empty caption"
    assert reasons[f"{images / 'pairs.csv'}:11"] == "conflicting label"
    assert reasons[str(images / "missing.png")] == "missing image"
    assert reasons[str(images / "corrupt.png")] == "not an image"
    assert ds.image_of_caption.tolist() == [0, 0, 1, 2, 3]
    assert list(ds.texts()) == ["a red square", "half of it is white", "a green band", "almost black", "grey"]
    assert "6 skipped" in ds.summary()


def test_jsonl_and_json_lists(images, tmp_path):
    lines = [
        {"image": "a.png", "captions": ["one", " two ", ""], "label": 1},
        {"image": "b.jpg", "caption": "three"},
        {"image": "c.png", "text": "four", "label": 1.5},
        {"image": "d.png"},
        ["not", "an", "object"],
        {"image": "d.png", "text": ["five", 5]},
        {"image": "d.png", "text": "six", "label": 0},
    ]
    body = "\n".join(json.dumps(x) for x in lines).replace('"three"}', '"three"}\n{broken json')
    (images / "p.jsonl").write_text(body + "\n")
    ds = read_pairs(images / "p.jsonl")
    assert ds.captions == [["one", "two"], ["three"], ["six"]]
    assert ds.classes == ["0", "1"] and ds.labels.tolist() == [1, -1, 0]
    assert dict(ds.skip_counts) == {"empty caption": 1, "invalid JSON": 1, "bad label": 1, "missing field": 1,
                                    "bad row": 2}  # fmt: skip
    listed = tmp_path / "sub" / "list.json"
    listed.parent.mkdir()
    listed.write_text(json.dumps([{"image": "b.jpg", "text": "x", "label": "k"}, {"image": "a.png", "text": "y"}]))
    ds = read_pairs(listed, image_root=images)  # image paths relative to image_root, not the file
    assert ds.captions == [["x"], ["y"]] and ds.classes == ["k"] and ds.labels.tolist() == [0, -1]


def test_items_decoded_and_captions_chosen(images):
    (images / "p.csv").write_text("image,caption\na.png,first\na.png,second\na.png,third\nc.png,grey\n")
    ds = read_pairs(images / "p.csv", img_size=8)
    item = ds[0]
    assert set(item) == {"image", "text", "label", "skipped"} and item["label"] == -1 and item["skipped"] == []
    image = item["image"]
    assert image.shape == (3, 8, 8) and image.dtype == torch.uint8
    assert image[:, :, 0].tolist() == [[255] * 8] * 3  # transparent half flattened onto white, not blue
    assert image[:, 0, -1].tolist() == [255, 0, 0]
    torch.manual_seed(3)
    drawn = [ds[0]["text"] for _ in range(30)]
    torch.manual_seed(3)
    assert [ds[0]["text"] for _ in range(30)] == drawn and set(drawn) == {"first", "second", "third"}
    ds.caption = "first"
    assert {ds[0]["text"] for _ in range(5)} == {"first"}
    grey = read_pairs(images / "p.csv", img_size=4, in_chans=1)[1]["image"]
    assert grey.shape == (1, 4, 4) and grey.unique().tolist() == [90]


def test_unreadable_image_found_when_read(images):
    (images / "p.csv").write_text("image,text\nd.png,zero\ntrunc.png,one\nb.jpg,two\n")
    ds = read_pairs(images / "p.csv")
    assert len(ds) == 3 and not ds.skip_counts  # the header of trunc.png is fine
    item = ds[1]
    assert item["text"] == "two" and item["skipped"][0][0] == str(images / "trunc.png")
    assert item["skipped"][0][1].startswith("unreadable image")
    assert ds.skip_counts == {"unreadable image": 1} and len(ds.skipped) == 1
    again = read_pairs(images / "p.csv").preload()
    assert len(again) == 2 and again.images.shape == (2, 3, 32, 32) and again.captions == [["zero"], ["two"]]
    assert again.skip_counts == {"unreadable image": 1}


def test_label_cells_with_spaces(images):
    (images / "spaced.csv").write_text("image,text,label\na.png,x, -1\nb.jpg,y, 2 \nd.png,z, cat \n")
    mixed = read_pairs(images / "spaced.csv")  # " 2 " is an index, " cat " a name: a tie, the first kind wins
    assert mixed.labels.tolist() == [-1, 2] and mixed.skip_counts == {"bad label": 1}
    assert mixed.skipped == [(f"{images / 'spaced.csv'}:4", "bad label 'cat' (a class name among integer labels)")]
    (images / "spaced.csv").write_text("image,text,label\na.png,x, -1\nb.jpg,y, 2 \n")
    ds = read_pairs(images / "spaced.csv")
    assert ds.classes == ["0", "1", "2"] and ds.labels.tolist() == [-1, 2]  # " -1" is no label, not a class


def test_files_without_usable_pairs(images):
    (images / "bad.csv").write_text("image,text\nmissing.png,a\n,b\nc.png,\n")
    with pytest.raises(ValueError, match=f"{images / 'bad.csv'}: no usable image-text pair.*1 missing image"):
        read_pairs(images / "bad.csv")
    (images / "rows.jsonl").write_text('{"text": "no image"}\n{oops\n')
    with pytest.raises(ValueError, match=r"rows.jsonl: no usable image-text pair \(2 rows skipped: 1 invalid JSON"):
        read_pairs(images / "rows.jsonl")
    (images / "header.csv").write_text("path,words\na.png,x\n")
    with pytest.raises(ValueError, match="header row"):
        read_pairs(images / "header.csv")
    with pytest.raises(FileNotFoundError, match="nothing.csv"):
        read_pairs(images / "nothing.csv")
    for name in ("empty.csv", "empty.tsv"):  # an empty caption file: said so, by name
        (images / name).write_text("\n")
        with pytest.raises(ValueError, match=f"{name}: the file is empty; expected a header row"):
            read_pairs(images / name)
    (images / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"empty.jsonl: no usable image-text pair \(no rows\)"):
        read_pairs(images / "empty.jsonl")


def test_build_split_layouts(images, tmp_path):
    (images / "train.csv").write_text("image,text,label\na.png,x,cat\nb.jpg,y,dog\nd.png,z,cat\n")
    (images / "test.tsv").write_text("image\ttext\tlabel\nc.png\tw\temu\n")
    train, test = build("train", root=images), build("val", root=images)  # test stands in for val
    assert train.classes == test.classes == ["cat", "dog", "emu"] and test.labels.tolist() == [2]
    assert train.heldout and train.caption == "random" and test.caption == "first"
    assert "image-text-pairs train: 3 images (3 classes)" in train.source
    one = build("test", root=images / "train.csv", limit=2)
    assert not one.heldout and len(one) == 2 and "every split reads" in one.source
    via = registry.build_dataset("image-text-pairs", "train", root=str(images), img_size=8)
    assert registry.entry("image-text-pairs").kind == "image-text" and via[0]["image"].shape == (3, 8, 8)
    with pytest.raises(ValueError, match="data.root"):
        build("train")


def test_build_reads_each_file_once(images, monkeypatch):
    (images / "train.csv").write_text("image,text,label\na.png,x,cat\nb.jpg,y,dog\n")
    (images / "val.csv").write_text("image,text,label\nd.png,z,emu\n")
    (images / ".hidden.csv").write_text("image,text\nnowhere.png,never read\n")
    read = []
    monkeypatch.setattr(pairs, "read_rows", lambda path, *a: read.append(Path(path).name) or real_read_rows(path, *a))
    assert build("train", root=images).classes == ["cat", "dog", "emu"]
    assert sorted(read) == ["train.csv", "val.csv"]  # the split's file is not read again; hidden files never
    for name in ("train.csv", "val.csv"):
        (images / name).rename(images / f"{name[:-4]}-all.csv")  # no split files: a flat folder
    read.clear()
    flat = build("train", root=images)
    assert len(flat) == 3 and not flat.heldout and sorted(read) == ["train-all.csv", "val-all.csv"]


def test_collate_with_tokenizer(images):
    rows = "".join(f"{'abcd'[i % 4]}{'.png' if i % 4 != 1 else '.jpg'},the picture number {i}\n" for i in range(8))
    (images / "p.csv").write_text("image,text\n" + rows)
    ds = read_pairs(images / "p.csv", img_size=8, caption="first")
    tok = train_tokenizer(ds.texts(), vocab_size=60, min_frequency=1)
    ds.with_tokenizer(tok, max_length=5)
    assert isinstance(ds.collate_fn, PairsCollator) and pickle.loads(pickle.dumps(ds.collate_fn)).text.max_length == 5
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=ds.collate_fn)))
    assert set(batch) == {"image", "input_ids", "attention_mask", "special_tokens_mask", "label", "skipped"}
    assert batch["image"].shape == (4, 3, 8, 8) and batch["image"].dtype == torch.uint8
    assert batch["input_ids"].shape == (4, 5) and batch["input_ids"].dtype == torch.int64
    assert batch["special_tokens_mask"].dtype == torch.bool and batch["label"].tolist() == [-1] * 4
    assert tok.decode(batch["input_ids"][1]) == "the picture number"  # truncated to 3 pieces + cls/sep
    assert ds.captions[1] == ["the picture number 1", "the picture number 5"]


# --- false images (ViLT's image-text matching negatives) ---------------------------------------


def _numbered(n: int) -> ImageTextPairs:
    """``n`` preloaded images, image ``k`` filled with the value ``k``."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    return ImageTextPairs([f"{k}.png" for k in range(n)], [[f"caption {k}"] for k in range(n)], [-1] * n,
                          img_size=4, images=images)  # fmt: skip


def _false_ids(ds: ImageTextPairs) -> list[int]:
    return [int(ds[i]["false_image"][0, 0, 0]) for i in range(len(ds))]


def test_false_images_are_other_images_drawn_from_seed_epoch_and_index():
    ds = _numbered(7).with_false_images(seed=3)
    assert "false_image" in ds.batch_keys
    draws = []
    for epoch in range(30):
        ds.set_epoch(epoch)
        ids = _false_ids(ds)
        assert all(f != i for i, f in enumerate(ids))  # never the sample's own image
        assert ids == _false_ids(ds)  # the same on every access (any worker, a resumed run)
        draws.append(ids)
    assert len({tuple(d) for d in draws}) > 20  # new negatives each epoch
    assert {d[0] for d in draws} == set(range(1, 7))  # every other image is reachable
    again = _numbered(7).with_false_images(seed=3)
    again.set_epoch(29)
    assert _false_ids(again) == draws[29]
    other = _numbered(7).with_false_images(seed=4)
    other.set_epoch(29)
    assert _false_ids(other) != draws[29]
    assert "false_image" not in _numbered(3)[0] and "false_image" not in _numbered(3).batch_keys


def test_false_images_in_batches_after_a_tokenizer_and_errors():
    ds = _numbered(4).with_false_images()
    ds.with_tokenizer(train_tokenizer(ds.texts(), vocab_size=60, min_frequency=1), max_length=8)
    assert "false_image" in ds.batch_keys and "input_ids" in ds.batch_keys
    batch = ds.collate_fn([ds[i] for i in range(4)])
    assert batch["false_image"].shape == batch["image"].shape == (4, 3, 4, 4)
    assert batch["false_image"].dtype == torch.uint8
    assert "false_image" not in ds.with_false_images(enable=False).batch_keys
    with pytest.raises(ValueError, match="at least 2 images"):
        _numbered(1).with_false_images()


def test_false_image_skips_unreadable_files_and_never_lands_on_its_own(tmp_path):
    for k in range(3):
        Image.new("RGB", (8, 8), (80 * k, 0, 0)).save(tmp_path / f"{k}.png")
    (tmp_path / "bad.png").write_bytes(b"not really a png but enough header?")
    paths = [str(tmp_path / n) for n in ("0.png", "bad.png", "1.png", "2.png")]
    ds = ImageTextPairs(paths, [["a"], ["b"], ["c"], ["d"]], [-1] * 4, img_size=8).with_false_images()
    for epoch in range(10):
        ds.set_epoch(epoch)
        for i in range(4):
            item = ds[i]
            assert not torch.equal(item["false_image"], item["image"])
