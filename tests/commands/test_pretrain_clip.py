"""End to end on the bundled emoji subset with a tiny CLIP: pretrain (tokenizer trained on
the captions, text tower sized by it), then ``convergent eval zero-shot`` and ``retrieval``
(with a gallery) from the run directory."""

import json
from pathlib import Path

import pytest

from convergent.cli import main

TINY = [
    "--preset", "clip-vit-emoji", "--model.backbone", "vit_clip_test", "--model.overrides", "{}",
    "--task.clip.text_backbone", "clip_text_test", "--task.clip.text_overrides", "{}", "--task.clip.embed_dim", "16",
    "--data.batch_size", "16", "--data.vocab_size", "300", "--trainer.max_steps", "2", "--optim.warmup_steps", "1",
    "--eval.knn", "false", "--eval.linear_probe", "false",
]  # fmt: skip


def train_tiny_clip(tmp_path_factory) -> Path:
    """The tiny CLIP run (2 steps on the bundled emoji subset, never a fetched set), in a fresh
    directory; the environment is restored once it is trained."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))  # no fetched emoji: the bundled subset
    mp.delenv("CONVERGENT_EMOJI_ROOT", raising=False)
    out = tmp_path_factory.mktemp("runs")
    try:
        assert main(["pretrain", *TINY, "--trainer.out_dir", str(out), "--trainer.run_name", "clip"]) == 0
    finally:
        mp.undo()
    return out / "clip"


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    return train_tiny_clip(tmp_path_factory)


def test_clip_run_summary(clip_run):
    s = json.loads((clip_run / "summary.json").read_text())
    assert s["steps"] == 2 and "bundled" in s["data"] and s["final_loss"] > 0
    assert (clip_run / "tokenizer" / "tokenizer.json").is_file()


def test_zero_shot_from_run(clip_run, tmp_path):
    out = tmp_path / "zs.json"
    assert main(["eval", "zero-shot", str(clip_run), "--templates", "a picture of {}.", "{}", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert 0.0 <= r["zero_shot_acc"] <= 1.0 and r["num_classes"] == 9 and r["chance"] == pytest.approx(1 / 9)
    assert r["num_images"] > 0


def test_retrieval_from_run(clip_run, tmp_path):
    out = tmp_path / "r.json"
    assert main(["eval", "retrieval", str(clip_run), "--ks", "1", "5", "--gallery", str(tmp_path / "g.png"),
                 "--out", str(out)]) == 0  # fmt: skip
    r = json.loads(out.read_text())
    assert {"i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@5", "mean_recall"} <= r.keys()
    assert r["num_texts"] >= r["num_images"] > 0
    assert (tmp_path / "g.png").stat().st_size > 0 and (tmp_path / "g.html").is_file()


def test_zero_shot_needs_an_image_text_run(clip_run, capsys):
    assert main(["eval", "zero-shot"]) == 2
    assert "needs a run directory" in capsys.readouterr().err


def test_vilt_run_with_whole_word_masking(clip_run, tmp_path, recwarn):
    """ViLT on the same bundled pairs; the batches carry word ids, so no fallback warning, and
    false images (ITM negatives drawn from the dataset, the default): the task requires the key,
    so the run is refused unless the workflow asked the dataset for them and the Trainer
    transformed them like ``image``."""
    argv = ["pretrain", "--preset", "vilt-emoji", "--model.backbone", "vit_test", "--model.overrides", "{}",
            "--data.batch_size", "8", "--data.vocab_size", "300", "--trainer.max_steps", "2",
            "--optim.warmup_steps", "1", "--eval.knn", "false", "--eval.linear_probe", "false",
            "--trainer.out_dir", str(tmp_path), "--trainer.run_name", "vilt"]  # fmt: skip
    assert main(argv) == 0
    records = [json.loads(line) for line in (tmp_path / "vilt" / "metrics.jsonl").read_text().splitlines()]
    assert {"itm_loss", "mlm_loss", "itm_acc", "mlm_acc"} <= records[-1].keys()
    assert not [w for w in recwarn if "word_ids" in str(w.message)]
    assert "itm_negatives: dataset" in (tmp_path / "vilt" / "config.yaml").read_text()


def test_retrieval_on_other_data(clip_run, tmp_path):
    """--data.* options replace the run's data: the emoji CLIP scores a pairs file of our own."""
    from PIL import Image

    rows = ["image,text"]
    for i in range(12):
        Image.new("RGB", (20, 20), (20 * i, 255 - 20 * i, 9)).save(tmp_path / f"p{i}.png")
        rows.append(f"p{i}.png,colour number {i}")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "r.json"
    args = ["eval", "retrieval", str(clip_run), "--data.name", "image-text-pairs", "--data.root",
            str(tmp_path / "pairs.csv"), "--split", "train", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    r = json.loads(out.read_text())
    assert "image-text-pairs" in r["data"] and 0 < r["num_images"] == r["num_texts"] <= 12


def _pairs_csv(folder, n: int, offset: int = 0):
    from PIL import Image

    folder.mkdir(parents=True)
    rows = ["image,text,label"]
    for i in range(offset, offset + n):
        Image.new("RGB", (20, 20), ((37 * i) % 256, (91 * i) % 256, 9)).save(folder / f"p{i}.png")
        rows.append(f"p{i}.png,colour number {i},{'ab'[i % 2]}")
    (folder / "pairs.csv").write_text("\n".join(rows) + "\n")
    return folder / "pairs.csv"


def test_clip_pretrains_on_streamed_shards_and_resumes(tmp_path, recwarn):
    """`convergent data shard` -> `pretrain --data.name image-text-shards` (the training split
    streamed, the test split read into memory for retrieval) -> resume mid-epoch."""
    shards = tmp_path / "shards"
    for split, n, offset in (("train", 40, 0), ("test", 12, 100)):
        csv = _pairs_csv(tmp_path / split, n, offset)
        assert main(["data", "shard", "--pairs", str(csv), "--out", str(shards / split), "--max_per_shard", "8"]) == 0
    args = [*TINY, "--data.name", "image-text-shards", "--data.root", str(shards), "--trainer.max_steps", "3",
            "--trainer.checkpoint_every", "2", "--trainer.out_dir", str(tmp_path / "runs"), "--trainer.run_name", "s"]
    assert main(["pretrain", *args]) == 0
    run = tmp_path / "runs" / "s"
    s = json.loads((run / "summary.json").read_text())
    assert s["steps"] == 3 and "shards: 5 tar files, 40 samples" in s["data"] and s["final_loss"] > 0
    out = tmp_path / "r.json"
    assert main(["eval", "retrieval", str(run), "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert "image-text-shards test" in r["data"] and r["num_images"] == 12
    # 40 samples at batch 16: 2 steps an epoch, so step 3 is mid-epoch: a fresh order, said so
    cfg = run / "config.yaml"
    cfg.write_text(cfg.read_text().replace("max_steps: 3", "max_steps: 5"))
    assert main(["pretrain", "--resume", str(run)]) == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 5
    assert any("cannot seek" in str(w.message) for w in recwarn)
