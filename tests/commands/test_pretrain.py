"""End-to-end CLI runs on a tiny model: pretrain (with bad images in the data), eval,
finetune, resume after a kill, and config errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convergent.cli import main

TINY = [
    "--model.backbone", "swinv2_test", "--model.overrides", "{depths: [2, 2], num_heads: [2, 4], window_size: 4}",
    "--task.simmim.mask_patch_size", "8", "--data.name", "image-folder", "--data.batch_size", "8",
    "--optim.warmup_steps", "1", "--trainer.log_every", "1", "--eval.probe_epochs", "2", "--eval.knn_k", "3",
    "--eval.layer", "-1",
]  # fmt: skip


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    """train/ and test/ split folders of 2 classes of real PNG/JPEG files, plus bad files in train."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 6)):
        for c, name in enumerate(("dark", "bright")):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                px = rng.integers(0, 100, (40, 36, 3)) + 150 * c
                Image.fromarray(px.astype(np.uint8)).save(d / f"{i}.{'png' if i % 2 else 'jpg'}")
    bad = root / "train" / "dark"
    (bad / "empty.png").write_bytes(b"")
    (bad / "notes.txt").write_text("not an image")
    (bad / "fake.png").write_text("this is text, not a PNG")
    good = (bad / "0.jpg").read_bytes()
    (bad / "truncated.jpg").write_bytes(good[: len(good) // 3])
    return root


def pretrain(tmp_path: Path, root: Path, *extra: str) -> int:
    return main(["pretrain", *TINY, "--data.root", str(root), "--trainer.out_dir", str(tmp_path), *extra])


def test_pretrain_eval_finetune_with_bad_images(tmp_path, image_root, capsys):
    assert pretrain(tmp_path, image_root, "--trainer.max_steps", "6", "--trainer.run_name", "r") == 0
    run = tmp_path / "r"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["nonfinite_steps"] == 0
    reported = " ".join(summary["skipped_examples"])
    assert summary["skipped_samples"] == 4, summary["skipped_examples"]
    for name in ("empty.png", "notes.txt", "fake.png", "truncated.jpg"):
        assert name in reported
    assert 0.0 <= summary["knn_acc"] <= 1.0 and "linear_probe_acc" in summary
    for f in ("config.yaml", "metrics.jsonl", "loss.png", "reconstructions.png", "encoder/model.safetensors"):
        assert (run / f).is_file(), f
    assert list((run / "tensorboard").iterdir())
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))

    assert main(["eval", str(run), "--eval.probe_epochs", "2", "--eval.knn_k", "3", "--out", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["knn_acc"] >= 0

    ft = ["finetune", "--model.init", str(run), "--model.backbone", "swinv2_test", "--data.name", "image-folder",
          "--data.root", str(image_root), "--data.batch_size", "8", "--trainer.max_steps", "3",
          "--trainer.out_dir", str(tmp_path), "--trainer.run_name", "ft", "--optim.warmup_steps", "1"]  # fmt: skip
    assert main(ft) == 0
    ft_summary = json.loads((tmp_path / "ft" / "summary.json").read_text())
    assert 0.0 <= ft_summary["test_acc"] <= 1.0 and ft_summary["init"].endswith("encoder")


def test_config_typo_exits_2_with_suggestion(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["pretrain", "--optim.lrr", "0.1"])
    assert e.value.code == 2
    assert "did you mean '--optim.lr'" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 0.1\n  wieght_decay: 0.1\n")
    with pytest.raises(SystemExit) as e:
        main(["pretrain", "--config", str(bad)])
    assert e.value.code == 2
    assert "wieght_decay" in capsys.readouterr().err


def test_print_config_and_presets(capsys):
    with pytest.raises(SystemExit) as e:
        main(["pretrain", "--preset", "mae-vit-fmnist", "--optim.lr", "0.01", "--print_config"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "name: mae" in out and "backbone: vit_micro" in out and "lr: 0.01" in out
    with pytest.raises(SystemExit) as e:
        main(["pretrain", "--preset", "mae-vit-fmnst"])
    assert e.value.code == 2 and "did you mean mae-vit-fmnist" in capsys.readouterr().err


def test_resume_after_kill(tmp_path, image_root):
    """A run killed after a checkpoint resumes from it and finishes all its steps."""
    cmd = [sys.executable, "-m", "convergent", "pretrain", *TINY, "--data.root", str(image_root),
           "--trainer.out_dir", str(tmp_path), "--trainer.run_name", "k", "--trainer.max_steps", "100000",
           "--trainer.checkpoint_every", "3", "--eval.knn", "false", "--eval.linear_probe", "false"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    ckpts = tmp_path / "k" / "checkpoints"
    deadline = time.time() + 120
    # any complete checkpoint will do: older ones are pruned, so waiting for one name can miss it
    while time.time() < deadline and not [p for p in ckpts.glob("step-*") if not p.name.endswith(".tmp")]:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in ckpts.glob("step-*") if not p.name.endswith(".tmp"))
    assert done, "no checkpoint was written before the kill"
    # continue the same run, shortened so the test stays quick (the step budget is in config.yaml)
    cfg = tmp_path / "k" / "config.yaml"
    target = int(done[-1].split("-")[1]) + 3
    cfg.write_text(cfg.read_text().replace("max_steps: 100000", f"max_steps: {target}"))
    assert main(["pretrain", "--resume", str(tmp_path / "k")]) == 0
    summary = json.loads((tmp_path / "k" / "summary.json").read_text())
    assert summary["steps"] == target
    steps = [json.loads(line)["step"] for line in (tmp_path / "k" / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == target


def test_resume_missing_dir_is_clear(tmp_path, capsys):
    assert main(["pretrain", "--resume", str(tmp_path / "nope")]) == 2
    assert "config.yaml" in capsys.readouterr().err
