"""image-folder: real PNG/JPEG files of every colour mode, bad files that must be skipped (at
scan time or lazily at decode, also with DataLoader workers), flat and split layouts, errors."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from convergent.data.collate import collate
from convergent.data.image_folder import build

RED, GREEN, BLUE = (220, 20, 20), (20, 200, 20), (20, 20, 220)


def noise(size=(48, 40), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def stripes(width=60, height=20) -> Image.Image:
    """Left third red, middle third green, right third blue: centre crop is all green."""
    a = np.zeros((height, width, 3), dtype=np.uint8)
    a[:, : width // 3], a[:, width // 3 : 2 * width // 3], a[:, 2 * width // 3 :] = RED, GREEN, BLUE
    return Image.fromarray(a)


def truncated_jpeg(path: Path) -> None:
    buf = io.BytesIO()
    noise((64, 64), seed=3).save(buf, "JPEG", quality=95)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


@pytest.fixture()
def tree(tmp_path) -> Path:
    """root/cat: 4 good images (RGB, L, RGBA, P) + an empty .png;
    root/dog: 2 good + a text file named .png + a truncated .jpg + README.txt."""
    cat, dog = tmp_path / "cat", tmp_path / "dog"
    cat.mkdir(), dog.mkdir()
    stripes().save(cat / "a_rgb.png")
    Image.new("L", (30, 30), 77).save(cat / "b_gray.jpg", quality=100)
    rgba = Image.new("RGBA", (24, 24), (0, 0, 0, 0))  # fully transparent black -> white
    rgba.paste((10, 20, 30, 255), (0, 0, 24, 12))  # top half opaque
    rgba.save(cat / "c_rgba.png")
    pal = Image.new("P", (16, 16), 1)
    pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    pal.save(cat / "d_palette.png", transparency=0)  # index 0 transparent, but unused: all (200,100,50)
    (cat / "e_empty.png").write_bytes(b"")
    noise(seed=1).save(dog / "a_ok.png")
    (dog / "b_fake.png").write_text("this is not a png\n")
    truncated_jpeg(dog / "c_trunc.jpg")
    noise(seed=2).save(dog / "d_ok.jpg")
    (dog / "README.txt").write_text("notes")
    (dog / ".DS_Store").write_bytes(b"\x00junk")  # hidden: ignored silently
    return tmp_path


def test_class_folders_decode_all_modes(tree):
    ds = build("train", root=tree, img_size=32)
    assert ds.classes == ["cat", "dog"]
    assert len(ds) == 8 and ds.labels.tolist() == [0] * 4 + [1] * 4
    assert "2 classes" in ds.source and str(tree) in ds.source
    items = [ds[i] for i in range(4)]
    for it in items:
        assert it["image"].shape == (3, 32, 32) and it["image"].dtype == torch.uint8 and it["label"] == 0
        assert it["skipped"] == []
    rgb, gray, rgba, pal = (it["image"].int() for it in items)
    assert (rgb - torch.tensor(GREEN).view(3, 1, 1)).abs().max() <= 2  # centre crop of the stripes
    assert (gray - 77).abs().max() <= 2 and torch.equal(gray[0], gray[1])
    assert rgba[:, -8:].min() == 255  # transparent half flattened onto white
    assert (rgba[:, :8] - torch.tensor([10, 20, 30]).view(3, 1, 1)).abs().max() <= 1
    assert (pal - torch.tensor([200, 100, 50]).view(3, 1, 1)).abs().max() == 0


def test_bad_files_skipped_with_reasons(tree):
    ds = build("train", root=tree)
    at_scan = dict(ds.skipped)
    assert set(at_scan) == {str(tree / "cat" / "e_empty.png"), str(tree / "dog" / "README.txt")}
    assert at_scan[str(tree / "cat" / "e_empty.png")].startswith("empty file")
    assert at_scan[str(tree / "dog" / "README.txt")].startswith("not an image")
    items = [ds[i] for i in range(len(ds))]  # decode everything: the lazy check
    bad = {str(tree / "dog" / "b_fake.png"), str(tree / "dog" / "c_trunc.jpg")}
    assert set(dict(ds.skipped)) == set(at_scan) | bad
    assert "UnidentifiedImageError" in dict(ds.skipped)[str(tree / "dog" / "b_fake.png")]
    assert "truncated" in dict(ds.skipped)[str(tree / "dog" / "c_trunc.jpg")]
    # item 5 (b_fake) and 6 (c_trunc) are replaced by the next readable sample, 7 (d_ok.jpg)
    assert set(p for p, _ in items[5]["skipped"]) == bad and items[6]["skipped"][0][0].endswith("c_trunc.jpg")
    assert torch.equal(items[5]["image"], items[7]["image"]) and torch.equal(items[6]["image"], items[7]["image"])
    assert not torch.equal(items[4]["image"], items[7]["image"])
    assert torch.equal(ds[5]["image"], items[5]["image"])  # deterministic on repeat


def test_workers_report_lazy_skips_through_batches(tree):
    ds = build("train", root=tree, img_size=16)
    loader = DataLoader(ds, batch_size=3, shuffle=True, num_workers=2, collate_fn=collate, persistent_workers=True)
    seen, new = 0, 0
    for batch in loader:
        assert batch["image"].shape[1:] == (3, 16, 16) and batch["label"].dtype == torch.int64
        seen += len(batch["label"])
        new += ds.skips.merge(batch["skipped"])
    assert seen == 8 and new == 2
    assert len(ds.skipped) == 4 and {p.rsplit("/", 1)[1] for p, _ in ds.skipped} == {
        "e_empty.png", "README.txt", "b_fake.png", "c_trunc.jpg"
    }
    for batch in loader:  # a second epoch reports the same files again: counted once
        assert ds.skips.merge(batch["skipped"]) == 0


def test_flat_folder_wraps_around(tmp_path):
    noise(seed=5).save(tmp_path / "a.png")
    noise(seed=6).save(tmp_path / "b.jpg")
    (tmp_path / "z.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = build("train", root=tmp_path, img_size=8, in_chans=1)
    assert ds.classes == [] and ds.labels.tolist() == [-1, -1, -1] and "unlabelled" in ds.source
    item = ds[2]  # last file unreadable -> the first
    assert torch.equal(item["image"], ds[0]["image"]) and item["image"].shape == (1, 8, 8)
    assert item["label"] == -1 and item["skipped"][0][0] == str(tmp_path / "z.png")


def test_split_folders_share_classes(tmp_path):
    for split, classes in (("train", ("ant", "bee", "cow")), ("val", ("bee",))):
        for c in classes:
            (tmp_path / split / c).mkdir(parents=True)
            noise(seed=len(c)).save(tmp_path / split / c / "x.png")
    train, test = build("train", root=tmp_path), build("test", root=tmp_path)
    assert train.classes == test.classes == ["ant", "bee", "cow"]
    assert len(train) == 3 and len(test) == 1 and test.labels.tolist() == [1]
    assert str(tmp_path / "val") in test.source and "no split folders" not in test.source


def test_limit_keeps_every_class(tree):
    ds = build("train", root=tree, limit=4)
    assert len(ds) == 4 and sorted(set(ds.labels.tolist())) == [0, 1]


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="no images in"):
        build("train", root=tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no images in .*1 files skipped"):
        build("train", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        build("train", root=tmp_path / "missing")
    with pytest.raises(ValueError, match="data.root"):
        build("train", root=None)
    with pytest.raises(ValueError, match="in_chans"):
        build("train", root=tmp_path, in_chans=2)
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match="none for split 'test'"):
        build("test", root=tmp_path)


def test_all_unreadable_raises(tmp_path):
    (tmp_path / "a.png").write_text("no")
    ds = build("train", root=tmp_path)
    with pytest.raises(RuntimeError, match="none of the 1 image files"):
        ds[0]
