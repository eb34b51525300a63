"""``convergent caption`` end to end on a tiny run of the caption preset: the run's summary has
the captioning metrics of its held-out emoji (BLEU-4, CIDEr), the command captions image files
(lines and JSON), and refuses what it cannot do."""

import json

import numpy as np
import pytest
from PIL import Image

from convergent.cli import main
from convergent.evaluation.captioning import caption_scores


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
