"""Fashion-MNIST: bundled subset, a root directory of idx files (gzip or not), the system
location, and clear errors for corrupt files."""

import gzip

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convergent.data.builtin import fashion_mnist as fm
from convergent.data.idx import read_idx, write_idx


@pytest.fixture(autouse=True)
def _no_system_files(monkeypatch, tmp_path_factory):
    """Tests must not depend on whether dataset-fashion-mnist is installed."""
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path_factory.mktemp("no-system"))


def write_split(directory, split, images, labels, gz=True):
    ext = ".gz" if gz else ""
    write_idx(directory / f"{fm.PREFIX[split]}-images-idx3-ubyte{ext}", images)
    write_idx(directory / f"{fm.PREFIX[split]}-labels-idx1-ubyte{ext}", labels)


def fake_arrays(n=20, side=28, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, side, side), dtype=np.uint8), (np.arange(n) % 10).astype(np.uint8)


def test_bundled_subset():
    train = fm.build("train", img_size=32, in_chans=3)
    assert len(train) == 6000 and "bundled subset" in train.source and "6000" in train.source
    assert train.classes == [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"
    ]
    assert train.skipped == []
    assert torch.bincount(train.labels, minlength=10).tolist() == [600] * 10
    item = train[123]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.uint8
    assert isinstance(item["label"], int) and 0 <= item["label"] < 10
    assert torch.equal(item["image"][0], item["image"][2])  # grayscale repeated
    assert item["image"].float().std() > 10  # a real picture, not a constant
    test = fm.build("test")
    assert len(test) == 1000 and torch.bincount(test.labels).tolist() == [100] * 10


def test_bundled_subset_is_prefix_of_real_data_per_class():
    """Bundled train = first 600 of every class in file order: labels interleave (not sorted)."""
    labels = read_idx(fm.BUNDLED_DIR / "train-labels-idx1-ubyte.gz", ndim=1)
    assert len(set(labels[:50].tolist())) == 10
    assert (fm.BUNDLED_DIR / "NOTICE").read_text().count("Zalando SE") >= 1


def test_native_size_is_exact_and_resize_is_bilinear():
    raw = read_idx(fm.BUNDLED_DIR / "t10k-images-idx3-ubyte.gz", ndim=3)
    ds28 = fm.build("test", img_size=28, in_chans=1)
    assert torch.equal(ds28[5]["image"][0], torch.from_numpy(raw[5]))
    ds16 = fm.build("test", img_size=16, in_chans=1, limit=10)
    ref = F.interpolate(torch.from_numpy(raw[5]).float()[None, None], size=(16, 16), mode="bilinear", antialias=True)
    assert (ds16[5]["image"].float() - ref[0]).abs().max() <= 0.5 + 1e-4


def test_root_round_trip_gz_and_plain(tmp_path):
    images, labels = fake_arrays(n=30, side=28)
    write_split(tmp_path, "train", images, labels, gz=True)
    write_split(tmp_path, "test", images[:10], labels[:10], gz=False)
    train = fm.build("train", root=str(tmp_path), img_size=28, in_chans=1)
    assert len(train) == 30 and f"root {tmp_path}" in train.source
    for i in (0, 17, 29):
        assert torch.equal(train[i]["image"][0], torch.from_numpy(images[i])) and train[i]["label"] == labels[i]
    test = fm.build("test", root=tmp_path, img_size=28)
    assert len(test) == 10 and test[3]["image"].shape == (3, 28, 28)


def test_system_dir_preferred_over_bundled(tmp_path, monkeypatch):
    images, labels = fake_arrays(n=12)
    write_split(tmp_path, "test", images, labels)
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path)
    ds = fm.build("test", img_size=28, in_chans=1)
    assert len(ds) == 12 and "Debian package files" in ds.source


def test_limit_and_bad_split(tmp_path):
    assert len(fm.build("train", limit=50)) == 50
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        fm.build("valid")
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        fm.build("test", root=tmp_path)  # empty root: no fallback, a clear error


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b"\x08\x03\x00\x00" + b[4:], "not an idx file"),  # wrong magic
        (lambda b: b"\x00\x00\x08\x02" + b[4:], "2 dimensions, expected 3"),
        (lambda b: b[: len(b) - 100], "truncated"),
        (lambda b: b + b"\x00" * 5, "trailing bytes"),
        (lambda b: b"", "not an idx file"),
    ],
)
def test_corrupt_images_file_is_named(tmp_path, damage, message):
    images, labels = fake_arrays()
    write_split(tmp_path, "train", images, labels, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=message) as info:
        fm.build("train", root=tmp_path)
    assert str(path) in str(info.value)


def test_truncated_gzip_and_count_mismatch_are_named(tmp_path):
    images, labels = fake_arrays()
    write_split(tmp_path, "train", images, labels)
    labels_path = tmp_path / "train-labels-idx1-ubyte.gz"
    images_path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = images_path.read_bytes()
    images_path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="corrupt gzip") as info:
        fm.build("train", root=tmp_path)
    assert str(images_path) in str(info.value)
    write_idx(images_path, images)
    labels_path.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3])))
    with pytest.raises(ValueError, match="20 images but .* has 3 labels"):
        fm.build("train", root=tmp_path)
    write_idx(labels_path, np.full(20, 10, dtype=np.uint8))
    with pytest.raises(ValueError, match="label 10 out of range"):
        fm.build("train", root=tmp_path)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, dtype):
    x = (np.arange(60).reshape(3, 4, 5) - 7).astype(dtype)
    y = read_idx(write_idx(tmp_path / "x.idx", x))
    assert y.dtype == x.dtype and y.shape == x.shape and (y == x).all() and y.flags.writeable
    gz = write_idx(tmp_path / "x.idx.gz", x)
    assert gz.read_bytes()[:2] == b"\x1f\x8b" and (read_idx(gz) == x).all()
    assert gz.read_bytes() == write_idx(tmp_path / "y.gz", x).read_bytes()  # reproducible bytes


def test_write_subset_is_class_balanced_prefix(tmp_path):
    written = fm.write_subset(fm.BUNDLED_DIR, tmp_path, {"train": 3, "test": 2})
    assert written == {"train": 30, "test": 20}
    labels = read_idx(tmp_path / "train-labels-idx1-ubyte.gz")
    assert np.bincount(labels).tolist() == [3] * 10
    full_images = read_idx(fm.BUNDLED_DIR / "train-images-idx3-ubyte.gz")
    full_labels = read_idx(fm.BUNDLED_DIR / "train-labels-idx1-ubyte.gz")
    first_bag = np.flatnonzero(full_labels == 8)[0]
    sub = read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    assert (sub[np.flatnonzero(labels == 8)[0]] == full_images[first_bag]).all()
