"""Bad samples are skipped and counted, never abort a run: a label of the other kind in a row
(text-lines, image-text pairs, shards), an image whose header declares more pixels than
``data.max_image_pixels`` (refused before decoding, in every image reader; Pillow's own
decompression-bomb error too), truncated images found up front with ``data.verify``; and one
``convergent pretrain`` run each on images and on text that finishes and counts them."""

import io
import json
import struct
import tarfile
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from convergent.cli import main
from convergent.config import DataConfig
from convergent.data import image_folder, pairs, registry, text
from convergent.data.builtin import emoji
from convergent.data.images import ImageTooLarge, open_image
from convergent.data.limits import MAX_IMAGE_PIXELS
from convergent.data.shards import ShardDataset, read_shards

BOMB_SIDE = 12000
"""Side of the oversized image: 144 megapixels, above the cap and Pillow's warning limit."""


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int = BOMB_SIDE) -> bytes:
    """A valid 1-bit greyscale PNG of ``side`` × ``side`` black pixels: ~18 KB on disk, seconds and
    hundreds of MiB to decode."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + the row's bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return bomb_png()


def noise_bytes(fmt: str, seed: int = 0, size: int = 48) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def truncated(fmt: str) -> bytes:
    """An image whose header reads fine but whose pixel data stops half-way."""
    data = noise_bytes(fmt, seed=7, size=64)
    return data[: len(data) // 2]


@pytest.fixture()
def loads(monkeypatch) -> list[tuple[int, int]]:
    """The sizes of every image Pillow decodes (``ImageFile.load``) during the test."""
    seen, real = [], ImageFile.ImageFile.load

    def spy(self):
        seen.append(self.size)
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return seen


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def image_tree(root: Path, bomb: bytes, n: int = 6) -> Path:
    """Flat folder: ``n`` good PNG/JPEG files, the bomb, a truncated PNG and a truncated JPEG."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        fmt = "PNG" if i % 2 else "JPEG"
        (root / f"ok{i}.{fmt.lower()}").write_bytes(noise_bytes(fmt, seed=i))
    (root / "bomb.png").write_bytes(bomb)
    (root / "trunc.png").write_bytes(truncated("PNG"))
    (root / "trunc.jpeg").write_bytes(truncated("JPEG"))
    return root


# --- labels of the other kind -----------------------------------------------------------------


def test_text_lines_skips_a_name_among_indices(tmp_path):
    rows = [{"text": f"doc {i}", "label": i % 3} for i in range(6)]
    rows.insert(3, {"text": "odd one", "label": "weird"})
    path = write_jsonl(tmp_path / "corpus.jsonl", rows)
    ds = registry.build_dataset("text-lines", "train", root=str(path))
    assert len(ds) == 6 and ds.classes == ["0", "1", "2"] and ds.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert ds.skip_counts == {"bad label": 1}
    assert ds.skipped == [(f"{path}:4", "bad label 'weird' (a class name among integer labels)")]


def test_text_lines_majority_wins_even_when_the_odd_row_comes_first(tmp_path):
    rows = [{"text": "first", "label": 7}] + [{"text": f"doc {i}", "label": "ab"[i % 2]} for i in range(4)]
    ds = text.TextLines(write_jsonl(tmp_path / "c.jsonl", rows))
    assert ds.classes == ["a", "b"] and len(ds) == 4
    assert ds.skipped == [(f"{tmp_path / 'c.jsonl'}:1", "bad label 7 (an integer among class names)")]


def test_text_lines_kinds_agree_across_split_files(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": f"t{i}", "label": i % 2} for i in range(5)])
    write_jsonl(tmp_path / "test.jsonl", [{"text": "x", "label": 1}, {"text": "y", "label": "weird"}, {"text": "z"}])
    train, test = text.build("train", tmp_path), text.build("test", tmp_path)
    assert train.classes == test.classes == ["0", "1"] and not train.skip_counts
    assert test.labels.tolist() == [1, -1] and test.skip_counts == {"bad label": 1}
    assert test.skipped[0][0] == f"{tmp_path / 'test.jsonl'}:2"


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_pairs_skip_a_name_among_indices(tmp_path, suffix):
    for i in range(4):
        (tmp_path / f"{i}.png").write_bytes(noise_bytes("PNG", seed=i, size=8))
    rows = [("0.png", "zero", 0), ("1.png", "one", 1), ("2.png", "two", "weird"), ("3.png", "three", 1)]
    path = tmp_path / f"pairs.{suffix}"
    if suffix == "csv":
        path.write_text("image,text,label\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    else:
        write_jsonl(path, [{"image": a, "text": b, "label": c} for a, b, c in rows])
    ds = pairs.build("train", path)
    assert ds.captions == [["zero"], ["one"], ["three"]] and ds.labels.tolist() == [0, 1, 1]
    assert ds.skip_counts == {"bad label": 1}
    line = 4 if suffix == "csv" else 3  # the CSV header is line 1
    assert ds.skipped == [(f"{path}:{line}", "bad label 'weird' (a class name among integer labels)")]


def tar_of(samples: dict[str, dict[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for key, members in samples.items():
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_shards_skip_labels_outside_the_classes(tmp_path):
    png = noise_bytes("PNG", size=8)
    meta = lambda label: json.dumps({"text": "a caption", "label": label}).encode()  # noqa: E731
    samples = {"a": {"png": png, "json": meta(0)}, "b": {"png": png, "json": meta("weird")},
               "c": {"png": png, "json": meta("cat")}, "d": {"png": png, "json": meta(99)},
               "e": {"png": png, "json": meta(1.5)}}  # fmt: skip
    (tmp_path / "shard-000000.tar").write_bytes(tar_of(samples))
    manifest = {"shards": [{"name": "shard-000000.tar", "count": 5}], "count": 5, "classes": ["dog", "cat"]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    ds = read_shards(tmp_path, img_size=4)
    assert ds.labels.tolist() == [0, 1] and ds.skip_counts == {"bad label": 3}
    shard = tmp_path / "shard-000000.tar"
    assert [w for w, _ in ds.skipped] == [f"{shard}:b", f"{shard}:d", f"{shard}:e"]
    assert ds.skipped[0][1] == "bad label ('weird': expected an index below 2 or one of the class names)"


# --- the pixel cap ----------------------------------------------------------------------------


def test_config_default_is_the_readers_default():
    assert DataConfig().max_image_pixels == MAX_IMAGE_PIXELS == 64 * 1024 * 1024
    assert DataConfig().verify is False


def test_image_folder_refuses_the_bomb_from_its_header(tmp_path, bomb, loads):
    root = image_tree(tmp_path / "imgs", bomb, n=2)
    for name in ("trunc.png", "trunc.jpeg"):
        (root / name).unlink()
    ds = image_folder.build("train", root)
    assert len(ds) == 3 and not ds.skip_counts  # the scan reads names and sizes only
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # a warning would fail the test
        start = time.perf_counter()
        items = [ds[i] for i in range(len(ds))]
        took = time.perf_counter() - start
    assert took < 1.0, f"{took:.2f} s: the bomb was decoded"  # a full decode takes seconds
    assert set(loads) == {(48, 48)}  # the good images were decoded, the bomb never
    where = str(root / "bomb.png")
    assert ds.skip_counts == {"too large": 1}
    assert ds.skipped == [(where, "too large (12000x12000 = 144,000,000 pixels > 67,108,864)")]
    assert items[0]["skipped"] == [(where, ds.skipped[0][1])]  # bomb.png sorts first: item 0 is the next


def test_cap_is_configurable(tmp_path):
    (tmp_path / "a.png").write_bytes(noise_bytes("PNG", size=48))
    (tmp_path / "b.png").write_bytes(noise_bytes("PNG", size=16))
    ds = registry.build_dataset("image-folder", "train", root=str(tmp_path), max_image_pixels=1000)
    assert ds[0]["skipped"] == [(str(tmp_path / "a.png"), "too large (48x48 = 2,304 pixels > 1,000)")]
    assert registry.build_dataset("image-folder", "train", root=str(tmp_path), max_image_pixels=None)[0]["skipped"] == []


def test_pillow_bomb_error_is_counted_not_raised(tmp_path, monkeypatch):
    (tmp_path / "a.png").write_bytes(noise_bytes("PNG", size=48))  # 2304 pixels
    (tmp_path / "b.png").write_bytes(noise_bytes("PNG", size=8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow raises above 2000
    with pytest.raises(ImageTooLarge, match=r"too large \(2,304 pixels > Pillow's limit"):
        with open_image(str(tmp_path / "a.png"), None):
            pass
    ds = image_folder.build("train", tmp_path, max_image_pixels=None)
    assert ds[0]["skipped"][0][1].startswith("too large (2,304 pixels") and ds.skip_counts == {"too large": 1}


def test_pairs_refuse_the_bomb_when_built(tmp_path, bomb, loads):
    (tmp_path / "bomb.png").write_bytes(bomb)
    (tmp_path / "ok.png").write_bytes(noise_bytes("PNG", size=8))
    (tmp_path / "p.csv").write_text("image,text\nbomb.png,huge\nok.png,fine\n")
    ds = pairs.read_pairs(tmp_path / "p.csv", img_size=4)
    assert len(ds) == 1 and ds.captions == [["fine"]] and ds.skip_counts == {"too large": 1}
    assert ds.skipped == [(str(tmp_path / "bomb.png"), "too large (12000x12000 = 144,000,000 pixels > 67,108,864)")]
    assert ds[0]["image"].shape == (3, 4, 4) and (BOMB_SIDE, BOMB_SIDE) not in loads


def test_shards_skip_the_bomb(tmp_path, bomb, loads):
    caption = lambda t: json.dumps({"text": t}).encode()  # noqa: E731
    samples = {"a": {"png": bomb, "json": caption("huge")}, "b": {"png": noise_bytes("PNG", size=8), "json": caption("ok")}}
    (tmp_path / "x.tar").write_bytes(tar_of(samples))
    ds = ShardDataset(tmp_path / "x.tar", img_size=4)
    items = list(ds)
    assert [it["text"] for it in items] == ["ok"] and ds.skip_counts == {"too large": 1}
    assert items[0]["skipped"] == [(f"{tmp_path / 'x.tar'}:a", "too large (12000x12000 = 144,000,000 pixels > 67,108,864)")]
    assert (BOMB_SIDE, BOMB_SIDE) not in loads


def test_emoji_files_skip_the_bomb(tmp_path, bomb, loads):
    root = tmp_path / "package"
    (root / emoji.IMAGE_DIR).mkdir(parents=True)
    codes = [c for c in (f"{0x1F300 + i:X}" for i in range(40)) if emoji.split_of(c) == "train"][:3]
    entries = [{"name": f"E {c}", "unified": c, "image": f"{c.lower()}.png", "short_names": [c.lower()],
                "category": emoji.CLASSES[0], "has_img_google": True} for c in codes]  # fmt: skip
    (root / "emoji.json").write_text(json.dumps(entries))
    for k, e in enumerate(entries):
        (root / emoji.IMAGE_DIR / e["image"]).write_bytes(bomb if k == 1 else noise_bytes("PNG", size=16))
    ds = emoji.load("train", root)
    assert len(ds) == 2 and ds.skip_counts == {"too large": 1}
    assert ds.skipped[0][0] == str(root / emoji.IMAGE_DIR / entries[1]["image"])
    assert (BOMB_SIDE, BOMB_SIDE) not in loads


# --- verification up front --------------------------------------------------------------------


def test_verify_finds_truncated_and_oversized_images_when_built(tmp_path, bomb, loads, capsys):
    root = image_tree(tmp_path / "imgs", bomb)
    lazy = image_folder.build("train", root)
    assert len(lazy) == 9 and not lazy.skip_counts  # without verify: found only when read
    ds = registry.build_dataset("image-folder", "train", root=str(root), verify=True)
    assert len(ds) == 6 and ds.skip_counts == {"unreadable": 2, "too large": 1}
    assert {Path(w).name for w, _ in ds.skipped} == {"bomb.png", "trunc.png", "trunc.jpeg"}
    assert "verified 9 images" in capsys.readouterr().out and ds.source.startswith("image-folder train: 6 images")
    assert all(ds[i]["skipped"] == [] for i in range(len(ds)))  # nothing left to find
    assert ds.skips.total == 3 and (BOMB_SIDE, BOMB_SIDE) not in loads
    # a flat folder (no split folders): the test split reads train's images and is not verified again
    test = registry.build_dataset("image-folder", "test", root=str(root), verify=True)
    assert not test.heldout and "verified" not in capsys.readouterr().out


def test_verify_pairs_from_files(tmp_path, bomb):
    image_tree(tmp_path, bomb, n=2)
    names = ["ok0.jpeg", "bomb.png", "ok1.png", "trunc.png", "trunc.jpeg"]
    (tmp_path / "train.csv").write_text("image,text\n" + "".join(f"{n},caption of {n}\n" for n in names))
    lazy = pairs.build("train", tmp_path)
    assert len(lazy) == 4 and lazy.skip_counts == {"too large": 1}  # the header check runs when built
    ds = pairs.build("train", tmp_path, verify=True)
    assert [Path(p).name for p in ds.paths] == ["ok0.jpeg", "ok1.png"]
    assert ds.skip_counts == {"too large": 1, "unreadable image": 2} and "2 images" in ds.source
    truncated_png = dict(ds.skipped)[str(tmp_path / "trunc.png")]
    assert truncated_png.startswith("unreadable image (OSError")


# --- whole runs -------------------------------------------------------------------------------

TINY_IMAGES = [
    "--model.backbone", "swinv2_test", "--model.overrides", "{depths: [2, 2], num_heads: [2, 4], window_size: 4}",
    "--task.simmim.mask_patch_size", "8", "--data.name", "image-folder", "--optim.warmup_steps", "1",
    "--eval.knn", "false", "--eval.linear_probe", "false",
]  # fmt: skip


def test_pretrain_run_counts_bad_images(tmp_path, bomb, capsys):
    root = image_tree(tmp_path / "imgs", bomb, n=8)
    argv = ["pretrain", *TINY_IMAGES, "--data.root", str(root), "--data.verify", "true", "--trainer.max_steps", "2",
            "--data.batch_size", "4", "--trainer.out_dir", str(tmp_path), "--trainer.run_name", "img"]  # fmt: skip
    start = time.perf_counter()
    assert main(argv) == 0
    assert time.perf_counter() - start < 120
    summary = json.loads((tmp_path / "img" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["skipped_samples"] == 3
    reported = "\n".join(summary["skipped_examples"])
    assert f"{root / 'bomb.png'}: too large (12000x12000" in reported
    assert f"{root / 'trunc.png'}: unreadable (" in reported and "trunc.jpeg: unreadable (" in reported
    assert "verified 11 images" in capsys.readouterr().out


def test_pretrain_text_run_counts_a_bad_label(tmp_path):
    rows = [{"text": f"the {w} sat on the mat number {i}", "label": i % 2} for i, w in enumerate(["cat", "dog"] * 6)]
    rows.insert(5, {"text": "a row with an odd label", "label": "weird"})
    corpus = write_jsonl(tmp_path / "corpus.jsonl", rows)
    argv = ["pretrain", "--preset", "mlm-bert-wordnet", "--data.name", "text-lines", "--data.root", str(corpus),
            "--data.vocab_size", "200", "--trainer.max_steps", "2", "--data.batch_size", "4",
            "--optim.warmup_steps", "1", "--trainer.out_dir", str(tmp_path), "--trainer.run_name", "txt"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((tmp_path / "txt" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["skipped_samples"] == 1
    assert summary["skipped_examples"] == [f"{corpus}:6: bad label 'weird' (a class name among integer labels)"]
