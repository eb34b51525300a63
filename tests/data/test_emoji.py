"""Emoji pairs: captions and labels from a hand-made emoji.json, the stable hash split with
skin-tone variants in their base emoji's split, skipped entries, where files are looked for,
fetch from a package .tgz, the bundled subset, and (slow) the real npm files."""

import collections
import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from convergent.data import registry
from convergent.data.builtin import emoji
from convergent.data.builtin.emoji import CLASSES, ENV, IMAGE_DIR, base_captions, load, split_of

SPLITS = ("train", "val", "test")


def entry(code: str, name: str, category: str, short_names=None, variants=None, google=True) -> dict:
    e = {"name": name, "unified": code, "image": f"{code.lower()}.png", "short_names": short_names or [name.lower()],
         "category": category, "has_img_google": google}  # fmt: skip
    if variants:
        e["skin_variations"] = {k: {"unified": f"{code}-{k}", "image": f"{code}-{k}.png".lower(), "has_img_google": g}
                                for k, g in variants.items()}  # fmt: skip
    return e


@pytest.fixture()
def package(tmp_path):
    """``tmp/package``: 60 base emoji 1F300.. over the 9 classes, every 5th with 5 skin tones and a
    two-tone variant; a Component swatch; one base without a Google image, one whose file is
    missing, one variant without a Google image. Images: a coloured square on transparency."""
    root = tmp_path / "package"
    (root / IMAGE_DIR).mkdir(parents=True)
    tones = {t: True for t in emoji.TONES} | {"1F3FB-1F3FC": True}
    entries = [entry(f"{0x1F300 + i:X}", f"EMOJI NUMBER {i}", CLASSES[i % 9], [f"number_{i}"],
                     tones if i % 5 == 0 else None) for i in range(60)]  # fmt: skip
    entries[7]["has_img_google"] = False
    entries[10]["skin_variations"]["1F3FF"]["has_img_google"] = False
    entries.append(entry("1F3FB", "EMOJI MODIFIER FITZPATRICK TYPE-1-2", "Component", ["skin-tone-2"]))
    for k, e in enumerate(entries):
        for image in [e["image"]] + [v["image"] for v in e.get("skin_variations", {}).values()]:
            if image != entries[3]["image"]:  # the missing file
                picture = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
                picture.paste((10 * (k % 25), 0, 200, 255), (16, 16, 48, 48))
                picture.save(root / IMAGE_DIR / image)
    (root / "emoji.json").write_text(json.dumps(entries))
    return root


def test_captions_and_tones():
    e = {"name": "GRINNING FACE", "short_names": ["grinning", "grinning_face"]}
    assert base_captions(e) == ["grinning face", "grinning"]  # lower-cased, '_' -> ' ', each once
    assert base_captions({"name": "Egypt Flag", "short_names": ["flag-eg"]}) == ["egypt flag", "flag-eg"]
    assert emoji.tone_name("1F3FD") == "medium skin tone"
    assert emoji.tone_name("1F3FB-1F3FF") == "light skin tone, dark skin tone"


def test_split_is_pinned():
    assert emoji.stable_hash("1F600") == 748448100  # splits never move between versions
    assert [split_of(c) for c in ("1F600", "26BD", "1F1EF-1F1F5")] == ["train", "test", "val"]


def test_splits_keep_variants_with_their_base(package):
    splits = {s: load(s, package, img_size=16) for s in SPLITS}
    again = load("val", package, img_size=16)
    assert again.captions == splits["val"].captions and torch.equal(again.images, splits["val"].images)
    codes = {s: ds.unified for s, ds in splits.items()}
    everything = [c for s in SPLITS for c in codes[s]]
    # 60 bases - 2 (no Google image, missing file) + 12 bases x 6 variants - 1 (no Google image)
    assert len(everything) == len(set(everything)) == 58 + 72 - 1
    assert all(len(codes[s]) for s in SPLITS)
    for s, ds in splits.items():
        assert all(split_of(b) == s for b in ds.base_unified)
        for base in set(ds.base_unified):  # every variant of a base sits in the base's split
            expected = (7 if (int(base, 16) - 0x1F300) % 5 == 0 else 1) - (base == "1F30A")  # 1F30A: one lacks
            assert sum(b == base for b in ds.base_unified) == expected
    assert "1F3FB" not in everything  # Component left out
    train = splits["train"]
    assert train.classes == CLASSES and set(train.labels.tolist()) == set(range(9))
    k = train.unified.index("1F300-1F3FD")
    assert train.captions[k] == ["emoji number 0: medium skin tone", "number 0: medium skin tone"]
    assert train.captions[train.unified.index("1F300-1F3FB-1F3FC")][0] == (
        "emoji number 0: light skin tone, medium-light skin tone")
    assert train.captions[train.unified.index("1F300")] == ["emoji number 0", "number 0"]
    assert train.caption == "random" and splits["test"].caption == "first"


def test_skipped_and_decoded(package):
    ds = {s: load(s, package) for s in SPLITS}
    counts = sum((d.skip_counts for d in ds.values()), collections.Counter())
    assert counts == {"no Google image": 2, "missing image": 1}  # each reported by its own split only
    missing = [w for d in ds.values() for w, r in d.skipped if r == "missing image"]
    assert missing == [str(package / IMAGE_DIR / "1f303.png")]
    item = ds["train"][0]
    assert set(item) == {"image", "text", "label", "skipped"}
    image = item["image"]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert image[:, 0, 0].tolist() == [255, 255, 255] and image[2, 16, 16] == 200  # transparency -> white
    grey = load("train", package, img_size=8, in_chans=1, limit=5)
    assert len(grey) == 5 and grey[0]["image"].shape == (1, 8, 8)


def test_where_files_are_read(package, tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "nothing"))
    assert "bundled subset" in load("test").source
    assert "root" in load("test", package.parent).source  # a folder holding package/ is fine
    monkeypatch.setenv(ENV, str(package))
    assert f"${ENV}" in load("test").source
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(ENV, str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="does not hold emoji.json"):
        load("test")
    monkeypatch.delenv(ENV)
    cached = tmp_path / "xdg" / "convergent" / "emoji" / "package"
    cached.parent.mkdir(parents=True)
    package.rename(cached)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert "cache" in load("test").source
    with pytest.raises(ValueError, match="unknown split"):
        load("dev")
    (cached / "emoji.json").write_text('[{"name": "cut off"')
    with pytest.raises(ValueError, match=f"{cached / 'emoji.json'}: not a JSON file"):
        load("test")
    (cached / "emoji.json").write_text('[{"name": "fine"}, "GRINNING FACE"]')
    with pytest.raises(ValueError, match=r"emoji.json: entry \[1\] is str, expected an object"):
        load("test")


def test_fetch_from_tgz(package, tmp_path):
    tgz = tmp_path / "emoji-datasource-google-0.0.0.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(package, arcname="package")
        extra = tarfile.TarInfo("package/img/google/sheets/64.png")
        extra.size = 3
        tar.addfile(extra, io.BytesIO(b"big"))
    dest = emoji.fetch(tmp_path / "dest", tgz=tgz)
    assert not (dest / "img/google/sheets").exists()  # only the metadata and the 64 px images
    assert len(list((dest / IMAGE_DIR).glob("*.png"))) == len(list((package / IMAGE_DIR).glob("*.png")))
    assert len(load("train", dest)) == len(load("train", package))


def test_bundled_subset(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    splits = {s: registry.build_dataset("emoji", s) for s in SPLITS}
    assert registry.entry("emoji").kind == "image-text"
    assert [len(splits[s]) for s in SPLITS] == [790, 92, 86]  # 503 base emoji + 465 skin-tone variants
    for s, ds in splits.items():
        assert "bundled subset" in ds.source and not ds.skip_counts
        assert set(ds.labels.tolist()) == set(range(9)), s  # every class in every split
        assert all(split_of(b) == s for b in ds.base_unified)
        assert ds.images.shape == (len(ds), 3, 32, 32)
    assert not set(splits["train"].base_unified) & set(splits["test"].base_unified)
    small = registry.build_dataset("emoji", "val", img_size=16, in_chans=1, limit=10)
    assert len(small) == 10 and small[0]["image"].shape == (1, 16, 16)
    assert splits["val"][0]["text"] == splits["val"].captions[0][0]


@pytest.mark.slow
@pytest.mark.skipif(not (emoji.Path("/tmp/package") / "emoji.json").is_file(), reason="npm package not in /tmp/package")
def test_real_files(monkeypatch):
    splits = {s: load(s, "/tmp/package") for s in SPLITS}
    assert [len(splits[s]) for s in SPLITS] == [3043, 381, 357]  # emoji-datasource-google 16.0.0
    assert sum(u == b for d in splits.values() for u, b in zip(d.unified, d.base_unified)) == 1906
    assert not any(d.skip_counts for d in splits.values())
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/nonexistent")
    bundled = emoji.load("test")
    real = splits["test"]
    index = {u: k for k, u in enumerate(real.unified)}
    picked = torch.stack([real.images[index[u]] for u in bundled.unified])
    assert torch.equal(picked, bundled.images)  # the bundled 32 px images equal decoding the files
    assert np.mean([len(c) for c in real.captions]) > 1
