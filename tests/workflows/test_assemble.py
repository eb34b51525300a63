"""A run assembled from its config: datasets, encoder and task, as every verb builds them."""

import pytest

from convergent.backbones.pretrained import save_pretrained
from convergent.backbones.registry import build_backbone
from convergent.config import PretrainConfig
from convergent.data.tokenizer import train_tokenizer
from convergent.workflows.assemble import build_datasets, build_encoder, build_run_task, task_encoder

TEXTS = ["a cat sat on the mat", "a dog ran in the park", "the sun is warm today"] * 10


def config(backbone: str, task: str = "mae", **data):
    cfg = PretrainConfig()
    cfg.model.backbone, cfg.task.name = backbone, task
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg


def test_datasets_with_a_held_out_split():
    train, test = build_datasets(config("vit_test", limit=40))
    assert len(train) == 40 and len(test) > 0 and train.classes == test.classes


def test_a_folder_without_test_split_has_no_evaluation(tmp_path, capsys):
    from PIL import Image

    for c in ("a", "b"):  # class folders without split folders: every split reads the same images
        (tmp_path / c).mkdir()
        Image.new("RGB", (8, 8), (200 if c == "a" else 10, 0, 0)).save(tmp_path / c / "0.png")
    train, test = build_datasets(config("vit_test", name="image-folder", root=str(tmp_path)))
    assert len(train) == 2 and test is None
    assert "no held-out split folder" in capsys.readouterr().out


def test_image_encoder_takes_the_data_geometry():
    backbone = build_encoder(config("vit_test", img_size=48, in_chans=1))
    assert (backbone.config.img_size, backbone.config.in_chans) == (48, 1)
    cfg = config("vit_test", img_size=48)
    cfg.model.overrides = {"img_size": 32}
    assert build_encoder(cfg).config.img_size == 32  # overrides win


def test_text_encoder_takes_the_tokenizer_vocabulary():
    tokenizer = train_tokenizer(TEXTS, kind="wordpiece", vocab_size=60)
    cfg = config("text_test", "mlm", max_length=16)
    backbone = build_encoder(cfg, tokenizer)
    assert backbone.config.vocab_size == tokenizer.vocab_size and backbone.config.pad_token_id == tokenizer.pad_id
    assert build_encoder(cfg, tokenizer, causal=True).config.causal


def test_task_encoder_is_causal_where_the_task_requires_it():
    """The encoder a task trains (and the random floor of the claims suite): causal attention for
    causal LM, bidirectional for MLM, the same vocabulary either way."""
    tokenizer = train_tokenizer(TEXTS, kind="wordpiece", vocab_size=60)
    causal = task_encoder(config("text_test", "causal-lm", max_length=16), tokenizer)
    both = task_encoder(config("text_test", "mlm", max_length=16), tokenizer)
    assert causal.config.causal and not both.config.causal
    assert causal.config.vocab_size == both.config.vocab_size == tokenizer.vocab_size


def test_encoder_from_init_weights(tmp_path):
    save_pretrained(build_backbone("vit_test", depth=1), tmp_path / "enc")
    cfg = config("vit_test")
    cfg.model.init = str(tmp_path / "enc")
    assert build_encoder(cfg).config.depth == 1


@pytest.mark.parametrize(("task", "backbone"), [("mae", "vit_test"), ("causal-lm", "text_test")])
def test_run_task_around_the_encoder(task, backbone):
    tokenizer = train_tokenizer(TEXTS, kind="bpe", vocab_size=300) if backbone == "text_test" else None
    built = build_run_task(config(backbone, task, max_length=16), tokenizer)
    assert built.name == task
    if tokenizer is not None:
        assert built.backbone.config.causal and built.backbone.config.vocab_size == tokenizer.vocab_size


def test_clip_text_tower_takes_the_tokenizer():
    tokenizer = train_tokenizer(TEXTS, kind="bpe", vocab_size=300)
    cfg = config("vit_clip_test", "clip", max_length=12)
    cfg.task.clip.text_backbone = "clip_text_test"
    task = build_run_task(cfg, tokenizer)
    assert task.text_backbone.config.vocab_size == tokenizer.vocab_size
