"""``convergent caption`` end to end on a tiny run of the caption preset: the run's summary has
the captioning metrics of its held-out emoji (BLEU-4, CIDEr), the command captions image files
(lines and JSON), and refuses what it cannot do."""

import json

import numpy as np
import pytest
from PIL import Image

from convergent.cli import main
from convergent.config import DataConfig
from convergent.data.pairs import ImageTextPairs
from convergent.evaluation.captioning import caption_scores, nearest_neighbour_captions


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("caption")
    args = ["pretrain", "--preset", "caption-vit-emoji", "--model.backbone", "vit_test", "--model.overrides",
            "{img_size: 32, patch_size: 8}", "--task.caption.text_backbone", "text_test", "--task.caption.text_overrides",
            "{}", "--task.caption.max_new_tokens", "4", "--data.batch_size", "16", "--data.vocab_size", "300",
            "--trainer.max_steps", "2", "--optim.warmup_steps", "1", "--trainer.out_dir", str(out),
            "--trainer.run_name", "cap"]  # fmt: skip
    assert main(args) == 0
    return out / "cap"


def test_the_run_reports_caption_metrics(run):
    summary = json.loads((run / "summary.json").read_text())
    assert 0 <= summary["val_bleu4"] <= 100 and summary["val_cider"] >= 0
    assert summary["val_captioned_images"] > 0 and len(summary["val_caption_examples"]) == 3
    assert 0 <= summary["val_nn_bleu4"] <= 100 and summary["val_nn_cider"] >= 0 and summary["val_cider_gain_se"] >= 0


def test_captioning_gallery(run, tmp_path):
    out = tmp_path / "c.json"
    assert main(["eval", "captioning", str(run), "--gallery", str(tmp_path / "g.png"), "--out", str(out)]) == 0
    found = json.loads(out.read_text())
    assert "val_bleu4" in found and (tmp_path / "g.png").stat().st_size > 1000


def test_caption_command(run, tmp_path, capsys):
    paths = []
    for i, colour in enumerate(((255, 0, 0), (0, 0, 255))):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((40, 40, 3), colour, dtype=np.uint8)).save(p)
        paths.append(str(p))
    assert main(["caption", str(run), *paths, "--beam", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == paths
    assert main(["caption", str(run), *paths, "--json", "--beam", "1"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == set(paths)
    (tmp_path / "bad.png").write_text("not an image")
    assert main(["caption", str(run), str(tmp_path / "bad.png")]) == 2
    assert "cannot read an image" in capsys.readouterr().err
    assert main(["caption", str(run), paths[0], "--beam", "0"]) == 2


def test_scores_reward_matching_captions():
    refs = [["a big red heart on white", "heart"], ["a grinning face with big eyes"], ["a cat face with tears of joy"]]
    good = caption_scores(["a big red heart on white", "a grinning face with big eyes", "a cat face with tears"], refs)
    bad = caption_scores(["a cat face with tears", "a big red heart on white", "a grinning face with big eyes"], refs)
    assert good["cider"] > bad["cider"] and good["bleu4"] > bad["bleu4"]
    with pytest.raises(ValueError, match="2 captions for 3 reference lists"):
        caption_scores(["a", "b"], refs)


def test_nearest_neighbour_captions_retrieve_the_closest_training_image(tmp_path):
    """Held-out images that are (noisy) copies of training images get those images' captions."""
    import torch

    from convergent.backbones.registry import build_backbone

    rng = np.random.default_rng(0)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    paths = []
    for i, c in enumerate(colours):
        p = tmp_path / f"t{i}.png"
        half = np.zeros((32, 32, 3), dtype=np.uint8)
        half[:, : 8 * (i + 1)] = c
        Image.fromarray(half).save(p)
        paths.append(p)
    train = ImageTextPairs(paths, [[f"caption {i}", "other"] for i in range(4)], [-1] * 4, source="train")
    order = [2, 0, 3, 1]
    noisy = []
    for j, i in enumerate(order):
        x = np.asarray(Image.open(paths[i])).astype(np.int16) + rng.integers(-3, 4, (32, 32, 3))
        q = tmp_path / f"h{j}.png"
        Image.fromarray(x.clip(0, 255).astype(np.uint8)).save(q)
        noisy.append(q)
    heldout = ImageTextPairs(noisy, [["x"]] * 4, [-1] * 4, source="heldout")
    torch.manual_seed(0)
    backbone = build_backbone("vit_test", img_size=32, patch_size=8)
    got = nearest_neighbour_captions(backbone, train, heldout, DataConfig(img_size=32), batch_size=2)
    assert got == [f"caption {i}" for i in order]
