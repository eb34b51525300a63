"""``convergent generate`` of a text-to-image run, end to end on tiny runs of the presets: an
image tokenizer (vqvae-emoji), the text-to-image model that uses it, a CLIP run that re-ranks
its samples; the PNG grid, the scores best first, and the refusals."""

import json

import pytest
from PIL import Image

from convergent.cli import main
from tests.commands.test_pretrain_clip import TINY as TINY_CLIP

COMMON = ["--data.batch_size", "16", "--trainer.max_steps", "3", "--optim.warmup_steps", "1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("t2i")
    vq = ["pretrain", "--preset", "vqvae-emoji", "--model.overrides", "{depths: [1, 1], dims: [8, 16]}",
          "--task.vqvae.num_codes", "32", "--task.vqvae.code_dim", "8", "--task.vqvae.decoder_width", "16",
          *COMMON, "--trainer.out_dir", str(out), "--trainer.run_name", "vq"]  # fmt: skip
    assert main(vq) == 0
    t2i = ["pretrain", "--preset", "dalle-emoji", "--task.text_to_image.tokenizer", str(out / "vq"),
           "--model.overrides", "{depth: 2, embed_dim: 32, num_heads: 2, mlp_dim: 64, max_position: 16}",
           "--data.vocab_size", "300", *COMMON, "--trainer.out_dir", str(out), "--trainer.run_name", "t2i"]  # fmt: skip
    assert main(t2i) == 0
    assert main(["pretrain", *TINY_CLIP, "--trainer.out_dir", str(out), "--trainer.run_name", "clip"]) == 0
    return out


def test_the_tokenizer_run_reports_its_reconstructions(runs):
    summary = json.loads((runs / "vq" / "summary.json").read_text())
    assert summary["val_psnr"] > 0 and 0 < summary["val_codebook_usage"] <= 1 and summary["val_reconstruction_images"] > 0
    assert (runs / "vq" / "image_tokenizer" / "heads.safetensors").is_file()


def test_generate_writes_a_grid(runs, capsys):
    out = runs / "grid.png"
    assert main(["generate", str(runs / "t2i"), "--prompt", "grinning face", "--num", "3", "--top_k", "5",
                 "--out", str(out)]) == 0  # fmt: skip
    assert "3 images for 'grinning face'" in capsys.readouterr().out
    w, h = Image.open(out).size
    assert (w, h) == (3 * 34 * 4, 34 * 4)  # 3 images of 32 px with a 1-px border, 4x
    assert main(["generate", str(runs / "t2i"), "--num", "2", "--out", str(runs / "empty.png")]) == 0  # empty prompt


def test_rerank_keeps_the_best_by_clip(runs, capsys):
    out = runs / "ranked.png"
    assert main(["generate", str(runs / "t2i"), "--prompt", "red heart", "--num", "2", "--candidates", "5",
                 "--rerank", str(runs / "clip"), "--out", str(out)]) == 0  # fmt: skip
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("CLIP cosine")][0]
    scores = [float(v) for v in line.split(":")[1].split()]
    assert len(scores) == 2 and scores[0] >= scores[1] and out.is_file()


def test_refusals(runs, capsys):
    assert main(["generate", str(runs / "t2i"), "--prompt", "x", "--rerank", str(runs / "vq")]) == 2
    assert "re-ranking needs a clip run" in capsys.readouterr().err
    assert main(["generate", str(runs / "t2i"), "--rerank", str(runs / "clip")]) == 2  # nothing to compare with
    assert "re-ranking compares the images with the prompt" in capsys.readouterr().err
    assert main(["generate", str(runs / "t2i"), "--prompt", "x", "--temperature", "0"]) == 2
    assert "temperature must be > 0" in capsys.readouterr().err
    assert main(["generate", str(runs / "t2i"), "--prompt", "a " * 40]) == 2
    assert "this model's text context is 16" in capsys.readouterr().err


def test_a_tokenizer_of_another_size_or_kind_is_refused_before_training(runs, capsys):
    def args(tokenizer, *extra):
        return ["pretrain", "--preset", "dalle-emoji", "--task.text_to_image.tokenizer", str(tokenizer), *extra,
                *COMMON, "--trainer.out_dir", str(runs), "--trainer.run_name", "bad"]  # fmt: skip

    for extra, tokenizer, message in (
        (("--data.img_size", "16"), runs / "vq", "encodes 32-px images, this run's data.img_size is 16"),
        ((), runs / "vq" / "encoder", "not an image tokenizer"),  # an encoder directory, not a tokenizer
        (("--data.in_chans", "1"), runs / "vq", "encodes 3-channel images, this run's data.in_chans is 1"),
        (("--data.mean", "[0.4, 0.4, 0.4]"), runs / "vq" / "image_tokenizer",  # its run's config says how
         "was trained on images normalised with mean [0.5, 0.5, 0.5] / std [0.5, 0.5, 0.5], this run's data.mean"),
    ):
        assert main(args(tokenizer, *extra)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--task.text_to_image.tokenizer " in err[0] and message in err[0], err
        assert not (runs / "bad").exists()  # refused before the run directory is made


def test_r_precision_judged_by_a_clip_run(runs, tmp_path):
    from convergent.workflows.evaluate import run_on_run

    out = tmp_path / "r.json"
    assert main(["eval", "r-precision", str(runs / "t2i"), "--clip", str(runs / "clip"), "--candidates", "5",
                 "--max_images", "12", "--gallery", str(tmp_path / "g.png"), "--out", str(out)]) == 0  # fmt: skip
    found = json.loads(out.read_text())
    assert found["candidates"] == 5 and found["chance"] == 0.2 and found["num_images"] == 12
    assert 0 <= found["r_precision"] <= 1 and (tmp_path / "g.png").is_file()
    with pytest.raises(ValueError, match="needs the CLIP run"):
        run_on_run("r-precision", runs / "t2i")


def test_r_precision_counts_own_caption_first():
    import torch

    from convergent.evaluation.r_precision import judge_picks, r_precision

    texts = torch.eye(6)
    assert judge_picks(texts.roll(1, dims=0), texts, 6) == [5, 0, 1, 2, 3, 4]  # image i looks like caption i - 1
    assert r_precision(texts.clone(), texts, 6) == 1.0  # every image closest to its own caption
    assert r_precision(texts.roll(1, dims=0), texts, 6) == 0.0  # every image closest to another's
    with pytest.raises(ValueError, match="candidates must be in"):
        r_precision(texts, texts, 7)
