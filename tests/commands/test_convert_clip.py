"""``convergent convert`` for CLIP, end to end at tiny size with random weights: a HF
``CLIPModel`` directory (with a CLIP tokenizer and image processor config) → a clip run
directory that ``load_task_from_run`` and ``convergent eval zero-shot`` read (embeddings,
logit scale and token ids match HF); a real tiny ``convergent pretrain`` CLIP run → a HF
directory that ``CLIPModel.from_pretrained`` / ``AutoTokenizer`` load (same embeddings, same
ids); and the one-line errors for bad input."""

import json

import pytest
import torch

from convergent.cli import main
from convergent.converters.hf import hf_converters
from convergent.converters.hf_clip import CLIPTowers, config_to_hf
from tests.converters.test_hf_clip import TEXT, VISION, _randomize

transformers = pytest.importorskip("transformers")

TOL = 1e-5
BOS, EOS = TEXT["bos_token_id"], TEXT["eos_token_id"]
MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
TEXTS = ["a photo of a dog", "red", "blue cat"]  # within the 16-token context


@pytest.fixture(autouse=True, scope="module")
def bundled_emoji(tmp_path_factory):
    """The bundled emoji subset (no fetched copy), as in tests/commands/test_pretrain_clip.py."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    mp.delenv("CONVERGENT_EMOJI_ROOT", raising=False)
    yield mp
    mp.undo()


def convert(*argv, capsys) -> str:
    """Run ``convergent convert`` in-process; return its one-line summary."""
    assert main(["convert", *map(str, argv)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and out.startswith("converted "), out
    return out


def fails(argv: list, capsys) -> str:
    assert main(["convert", *map(str, argv)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("convergent convert: error: "), err
    return err


def clip_tokenizer():
    """A CLIP tokenizer (byte-level BPE, ``</w>`` word ends) over single letters, its
    ``<|startoftext|>`` / ``<|endoftext|>`` at the ids the tiny config names."""
    vocab = {}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    vocab.update({"<|startoftext|>": BOS, "<|endoftext|>": EOS})
    return transformers.CLIPTokenizer(vocab=vocab, merges=[])


def features(out) -> torch.Tensor:
    """Projected features of ``get_{image,text}_features`` (a tensor, or in transformers 5
    an output whose ``pooler_output`` holds them), L2-normalised."""
    return torch.nn.functional.normalize(getattr(out, "pooler_output", out), dim=-1)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A tiny HF CLIP directory: config, weights, tokenizer, image processor config."""
    torch.manual_seed(0)
    config = transformers.CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=20)
    model = transformers.CLIPModel(config)
    _randomize(model, seed=0)
    with torch.no_grad():
        model.logit_scale.fill_(3.1)
    path = tmp_path_factory.mktemp("hf") / "clip"
    model.save_pretrained(path)
    clip_tokenizer().save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps({"image_mean": MEAN, "image_std": STD}))
    return path


def test_hf_clip_to_run_matches_hf_and_evaluates(hf_dir, tmp_path, capsys):
    from convergent.data.tokenizer import Tokenizer
    from convergent.workflows.assemble import load_task_from_run

    out = tmp_path / "ours"
    summary = convert(hf_dir, out, "--from", "hf", capsys=capsys)
    assert "HF clip -> convergent clip run" in summary and "tokenizer carried over" in summary
    task, tokenizer, cfg = load_task_from_run(out)
    assert isinstance(tokenizer, Tokenizer) and (tokenizer.cls_id, tokenizer.sep_id) == (BOS, EOS)
    assert list(cfg.data.mean) == MEAN and list(cfg.data.std) == STD and cfg.data.max_length == 16

    hf = transformers.CLIPModel.from_pretrained(hf_dir).eval()
    ref = clip_tokenizer()(TEXTS, padding=True, return_tensors="pt")
    enc = tokenizer.encode_batch(TEXTS, max_length=cfg.data.max_length)
    assert torch.equal(enc["input_ids"], ref["input_ids"]) and torch.equal(enc["attention_mask"], ref["attention_mask"])
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        text_ref = features(hf.get_text_features(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"]))
        text = task.encode_text(enc["input_ids"], enc["attention_mask"])
        torch.testing.assert_close(text, text_ref, atol=TOL, rtol=0)
        image_ref = features(hf.get_image_features(pixel_values=images))
        torch.testing.assert_close(task.encode_image(images), image_ref, atol=TOL, rtol=0)
    assert task.logit_scale.item() == hf.logit_scale.item() == pytest.approx(3.1)
    torch.testing.assert_close(task.scale(), hf.logit_scale.exp(), atol=0, rtol=1e-6)

    # the eval commands read the converted run directly (bundled emoji, prompts of letters)
    results = tmp_path / "zs.json"
    assert main(["eval", "zero-shot", str(out), "--templates", "{}", "--out", str(results)]) == 0
    assert 0.0 <= json.loads(results.read_text())["zero_shot_acc"] <= 1.0


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    """A real 2-step CLIP pre-training run at tiny size (as tests/commands/test_pretrain_clip.py)."""
    from tests.commands.test_pretrain_clip import TINY

    out = tmp_path_factory.mktemp("runs")
    assert main(["pretrain", *TINY, "--trainer.max_steps", "1", "--trainer.out_dir", str(out),
                 "--trainer.run_name", "clip"]) == 0  # fmt: skip
    return out / "clip"


def test_clip_run_to_hf_loads_in_transformers(clip_run, tmp_path, capsys):
    from convergent.workflows.assemble import load_task_from_run

    dst = tmp_path / "hf"
    summary = convert(clip_run, dst, "--from", "convergent", "--to", "hf", capsys=capsys)
    assert "convergent clip run -> HF clip" in summary and "tokenizer written" in summary
    assert "backbone.mask_token" in summary  # dropped, and said so
    assert json.loads((dst / "config.json").read_text())["model_type"] == "clip"
    hf, info = transformers.CLIPModel.from_pretrained(dst, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    hf.eval()

    task, tokenizer, cfg = load_task_from_run(clip_run)
    enc = tokenizer.encode_batch(TEXTS, max_length=cfg.data.max_length)
    hf_tok = transformers.AutoTokenizer.from_pretrained(dst)(TEXTS, padding=True, return_tensors="pt")
    assert torch.equal(hf_tok["input_ids"], enc["input_ids"])
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        text = features(hf.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]))
        torch.testing.assert_close(text, task.encode_text(enc["input_ids"], enc["attention_mask"]), atol=TOL, rtol=0)
        image = features(hf.get_image_features(pixel_values=images))
        torch.testing.assert_close(image, task.encode_image(images), atol=TOL, rtol=0)
    assert hf.logit_scale.item() == task.logit_scale.item()
    assert json.loads((dst / "preprocessor_config.json").read_text())["image_mean"] == list(cfg.data.mean)


# --- bad input: exit 2, one line naming the file -------------------------------------------------


def test_clip_config_without_a_tower_is_named(hf_dir, tmp_path, capsys):
    src = tmp_path / "hf"
    src.mkdir()
    config = json.loads((hf_dir / "config.json").read_text())
    (src / "model.safetensors").symlink_to(hf_dir / "model.safetensors")
    (src / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "vision_config"}))
    err = fails([src, tmp_path / "out", "--from", "hf"], capsys)
    assert str(src / "config.json") in err and "'vision_config'" in err

    config["vision_config"]["hidden_size"] = 32  # the weights are 24 wide
    (src / "config.json").write_text(json.dumps(config))
    err = fails([src, tmp_path / "out", "--from", "hf"], capsys)
    assert str(src / "config.json") in err and "does not match the weights" in err and "(24,)" in err


def test_non_clip_run_and_unknown_model_type_are_named(tmp_path, capsys):
    run = tmp_path / "mae-run"
    run.mkdir()
    (run / "config.yaml").write_text("task:\n  name: mae\n")
    err = fails([run, tmp_path / "out", "--from", "convergent"], capsys)
    assert str(run / "config.yaml") in err and "'mae'" in err and str(run / "encoder") in err

    src = tmp_path / "hf"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "siglip"}))
    torch.save({"w": torch.zeros(1)}, src / "pytorch_model.bin")
    err = fails([src, tmp_path / "out", "--from", "hf"], capsys)
    backbones = ", ".join(sorted(hf_converters()))  # every family's HF_MODEL_TYPES
    assert "'siglip'" in err and f"{backbones}; clip" in err


def test_tokenizer_without_its_special_tokens_is_named(hf_dir, tmp_path, capsys):
    src = tmp_path / "hf"
    src.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (src / name).symlink_to(hf_dir / name)
    (src / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>"}))
    err = fails([src, tmp_path / "out", "--from", "hf"], capsys)
    assert str(src / "tokenizer.json") in err and "'<s>'" in err and "bos_token" in err


def test_config_towers_round_trip_through_disk(hf_dir, tmp_path, capsys):
    """HF → run → HF keeps the config and every tensor exactly."""
    from safetensors.torch import load_file

    convert(hf_dir, tmp_path / "ours", "--from", "hf", capsys=capsys)
    convert(tmp_path / "ours", tmp_path / "back", "--from", "convergent", capsys=capsys)
    a, b = load_file(str(hf_dir / "model.safetensors")), load_file(str(tmp_path / "back" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    from convergent.converters.hf_clip import config_from_hf

    before = config_from_hf(json.loads((hf_dir / "config.json").read_text()))
    after = config_from_hf(json.loads((tmp_path / "back" / "config.json").read_text()))
    assert isinstance(after, CLIPTowers) and (after.vision, after.text, after.embed_dim) == (
        before.vision, before.text, before.embed_dim)  # fmt: skip
    assert config_to_hf(after)["text_config"]["eos_token_id"] == EOS
