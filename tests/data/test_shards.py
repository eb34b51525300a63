"""Tar shards: write from a tiny pairs set and read back the identical (image bytes, captions)
pairs; split across DataLoader workers and ranks without duplicates or losses; seeded
shuffling; unusable samples skipped and counted; the ``convergent data shard`` command."""

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from convergent.cli import main
from convergent.data.pairs import read_pairs
from convergent.data.shards import ShardDataset, write_shards

N = 7


@pytest.fixture()
def pairs(tmp_path):
    """7 images (PNG and JPEG) with 1-2 captions each, labels a/b, plus one missing image."""
    rows = ["image,text,label"]
    for i in range(N):
        ext = "jpg" if i % 3 == 0 else "png"
        Image.new("RGB", (10 + i, 12), (30 * i, 255 - 30 * i, 7)).save(tmp_path / f"img{i}.{ext}")
        rows.append(f"img{i}.{ext},caption {i},{'ab'[i % 2]}")
        if i % 2:
            rows.append(f"img{i}.{ext},second caption {i},{'ab'[i % 2]}")
    rows.append("gone.png,lost,a")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    return read_pairs(tmp_path / "pairs.csv", img_size=16, caption="first")


def keys(dataset, **loader) -> list[str]:
    return [k for b in DataLoader(dataset, batch_size=2, collate_fn=dataset.collate_fn, **loader) for k in b["key"]]


def test_round_trip_identical_pairs(pairs, tmp_path):
    manifest = write_shards(pairs, tmp_path / "shards", max_per_shard=2)
    assert manifest["count"] == N and [s["count"] for s in manifest["shards"]] == [2, 2, 2, 1]
    assert manifest["classes"] == ["a", "b"] and manifest["skipped"] == 0  # gone.png was skipped by read_pairs
    raw = list(ShardDataset(tmp_path / "shards", decode=False, caption="first"))
    original = [(Path(p).read_bytes(), c[0]) for p, c in zip(pairs.paths, pairs.captions)]
    assert [(it["image"], it["text"]) for it in raw] == original
    assert [it["ext"] for it in raw] == [Path(p).suffix[1:] for p in pairs.paths]
    assert [it["label"] for it in raw] == pairs.labels.tolist()
    decoded = list(ShardDataset(tmp_path / "shards", img_size=16, caption="first"))
    for k, it in enumerate(decoded):
        assert torch.equal(it["image"], pairs[k]["image"]) and it["skipped"] == []
    with tarfile.open(tmp_path / "shards" / "shard-000001.tar") as tar:
        meta = json.loads(tar.extractfile("000000003.json").read())
    assert meta == {"text": "caption 3", "captions": ["caption 3", "second caption 3"], "label": 1,
                    "source": "img3.jpg"}  # fmt: skip
    assert not list((tmp_path / "shards").glob("*.tmp"))


def test_split_across_workers_and_ranks(pairs, tmp_path):
    write_shards(pairs, tmp_path / "many", max_per_shard=2)  # 4 shards: dealt to readers by shard
    write_shards(pairs, tmp_path / "one", max_per_shard=100)  # 1 shard < 2 readers: split by sample
    everything = [f"{k:09d}" for k in range(N)]
    for folder in ("many", "one"):
        ds = ShardDataset(tmp_path / folder, decode=False)
        got = keys(ds, num_workers=2)
        assert sorted(got) == everything, folder  # no duplicates, no losses
        ranks = [keys(ShardDataset(tmp_path / folder, decode=False, rank=r, world_size=2)) for r in (0, 1)]
        assert not set(ranks[0]) & set(ranks[1]) and sorted(ranks[0] + ranks[1]) == everything
        assert ranks[0] and ranks[1]


def test_seeded_shuffle(pairs, tmp_path):
    write_shards(pairs, tmp_path / "s", max_per_shard=2)
    ds = ShardDataset(tmp_path / "s", decode=False, shuffle=3, seed=1)
    first = [it["key"] for it in ds]
    assert first == [it["key"] for it in ds] and sorted(first) == [f"{k:09d}" for k in range(N)]
    ds.set_epoch(1)
    assert [it["key"] for it in ds] != first
    plain = [it["key"] for it in ShardDataset(tmp_path / "s", decode=False)]
    assert plain == sorted(plain) and plain != first


def add(tar, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_unusable_samples_skipped_and_counted(tmp_path):
    good = io.BytesIO()
    Image.new("RGB", (4, 4), (9, 9, 9)).save(good, "PNG")
    with tarfile.open(tmp_path / "x.tar", "w") as tar:
        add(tar, "s/a.png", good.getvalue())
        add(tar, "s/a.txt", b"plain text caption")
        add(tar, "s/a.cls", b"3")
        add(tar, "b.json", b'{"text": "no image"}')
        add(tar, "c.png", good.getvalue())
        add(tar, "c.json", b"{not json")
        add(tar, "d.jpg", b"\xff\xd8 not really a jpeg")
        add(tar, "d.txt", b"broken image")
        add(tar, "e.png", good.getvalue())
        add(tar, "e.json", b'{"caption": "  "}')
        add(tar, "f.webp.png", good.getvalue())  # key "f", extension "webp.png": not an image ext
        add(tar, "g.png", good.getvalue())
        add(tar, "g.json", b'{"captions": ["one", "two"], "label": 1}')
    ds = ShardDataset(tmp_path / "x.tar", img_size=4, caption="first")
    items = list(ds)
    assert [(it["key"], it["text"], it["label"]) for it in items] == [("s/a", "plain text caption", 3), ("g", "one", 1)]
    assert dict(ds.skip_counts) == {"no image": 2, "invalid JSON": 1, "unreadable image": 1, "no caption": 1}
    assert [w.rsplit(":", 1)[1] for w, _ in items[1]["skipped"]] == ["b", "c", "d", "e", "f"]
    assert items[0]["image"].unique().tolist() == [9]


def test_malformed_captions_and_tar_named(tmp_path):
    good = io.BytesIO()
    Image.new("RGB", (4, 4), (9, 9, 9)).save(good, "PNG")
    with tarfile.open(tmp_path / "x.tar", "w") as tar:
        for key, meta in (("a", b'{"text": 5}'), ("b", b'{"captions": {"k": 1}}'), ("c", b'{"captions": ["ok", 3]}')):
            add(tar, f"{key}.png", good.getvalue())
            add(tar, f"{key}.json", meta)
        add(tar, "d.png", good.getvalue())
        add(tar, "d.json", b'{"captions": ["fine"]}')
    ds = ShardDataset(tmp_path / "x.tar", img_size=4)
    items = list(ds)
    assert [it["key"] for it in items] == ["d"] and dict(ds.skip_counts) == {"no caption": 3}
    assert "got int" in dict(ds.skipped)[f"{tmp_path / 'x.tar'}:a"]
    (tmp_path / "junk.tar").write_bytes(b"not a tar file")
    with pytest.raises(tarfile.ReadError, match="junk.tar: not a readable tar shard"):
        list(ShardDataset(tmp_path / "junk.tar"))


def test_command_and_errors(pairs, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["data", "shard", "--pairs", str(tmp_path / "pairs.csv"), "--out", str(out), "--max_per_shard", "3"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "1 missing image" in printed and f"wrote {N} images in 3 shards" in printed
    assert json.loads((out / "manifest.json").read_text())["count"] == N
    assert len(list(ShardDataset(str(out / "shard-*.tar"), decode=False))) == N  # a glob pattern
    assert main(["data", "shard", "--pairs", str(tmp_path / "none.csv"), "--out", str(out)]) == 2
    assert "none.csv" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no .tar files"):
        ShardDataset(tmp_path)
    (out / "manifest.json").write_text('{"count": 7}')
    with pytest.raises(ValueError, match=f"{out / 'manifest.json'} is not valid"):
        ShardDataset(out)
    with pytest.raises(ValueError, match="max_per_shard"):
        write_shards(pairs, out, max_per_shard=0)


def test_registered_dataset_streams_train_and_reads_heldout_into_memory(pairs, tmp_path):
    from convergent.data.registry import build_dataset

    write_shards(pairs, tmp_path / "root" / "train", max_per_shard=3)
    write_shards(pairs, tmp_path / "root" / "test", max_per_shard=3)
    root = str(tmp_path / "root")
    train = build_dataset("image-text-shards", "train", root=root, img_size=16)
    assert isinstance(train, ShardDataset) and train.repeat and train.heldout
    assert sorted(train.texts()) == sorted(pairs.texts())  # every caption, for a tokenizer
    test = build_dataset("image-text-shards", "test", root=root, img_size=16)
    assert len(test) == len(pairs) and test.classes == ["a", "b"] and test.heldout
    assert test.captions == pairs.captions  # every caption kept, in order
    assert torch.equal(test.labels, pairs.labels)
    assert torch.equal(test[0]["image"], pairs[0]["image"])
    assert len(build_dataset("image-text-shards", "test", root=root, img_size=16, limit=3)) == 3
    # shards without split folders: training only, no held-out split
    flat = build_dataset("image-text-shards", "train", root=str(tmp_path / "root" / "train"), img_size=16)
    assert not flat.heldout
    with pytest.raises(FileNotFoundError, match="no test folder"):
        build_dataset("image-text-shards", "test", root=str(tmp_path / "root" / "train"), img_size=16)
    with pytest.raises(ValueError, match="data.limit is not supported"):
        build_dataset("image-text-shards", "train", root=root, img_size=16, limit=5)


def test_stream_order_gives_every_resume_point_its_own_order():
    """Resume keys count micro-batches: with accumulation, (epoch, start) pairs never share a
    key, and none is a whole epoch's key."""
    from convergent.training.sampler import StreamOrder

    class Stream:
        repeat, num_samples = True, 64

        def set_epoch(self, epoch):
            self.key = epoch

    stream = Stream()
    order = StreamOrder(stream, global_batch=8, max_steps=100, accumulate=2)  # 8 steps, 16 micro-batches
    keys = []
    for epoch in range(3):
        for start in range(1, order.micro_batches_per_epoch):
            order.set_epoch(epoch, start)
            keys.append(stream.key)
    assert len(set(keys)) == len(keys) and all(k < 0 for k in keys)
