"""fashion-mnist-captions: the Fashion-MNIST images captioned by their class names, read by the
pair-reading tasks (a tiny text-to-image run of the dalle-fmnist preset draws a garment by name)."""

import pytest
from PIL import Image

from convergent.cli import main
from convergent.data.builtin.fashion_mnist import CLASSES
from convergent.data.builtin.fashion_mnist_captions import CAPTIONS
from convergent.data.pairs import ImageTextPairs
from convergent.data.registry import build_dataset
from tests.preset_helpers import stand_in_tokenizer


def test_each_image_is_captioned_by_its_class_name():
    plain = build_dataset("fashion-mnist", "test", img_size=16, in_chans=1, limit=20)
    pairs = build_dataset("fashion-mnist-captions", "val", img_size=16, in_chans=3, limit=20)
    assert isinstance(pairs, ImageTextPairs) and pairs.classes == CLASSES and len(pairs) == 20
    for i in range(20):
        item = pairs[i]
        assert item["text"] == CAPTIONS[plain[i]["label"]] == pairs.captions[i][0]
        assert item["label"] == plain[i]["label"] and item["image"].shape == (3, 16, 16)
        assert (item["image"] == plain[i]["image"]).all()  # the grey image on every channel
    assert CAPTIONS[0] == "t-shirt or top" and CAPTIONS[9] == "ankle boot"
    assert "class names as captions" in pairs.source
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        build_dataset("fashion-mnist-captions", "dev")


def test_the_dalle_fmnist_preset_draws_a_garment_by_name(tmp_path):
    stand_in_tokenizer(4, 32).save_pretrained(tmp_path / "tok")
    args = ["pretrain", "--preset", "dalle-fmnist", "--task.text_to_image.tokenizer", str(tmp_path / "tok"),
            "--model.overrides", "{depth: 2, embed_dim: 32, num_heads: 2, mlp_dim: 64, max_position: 8}",
            "--data.batch_size", "8", "--trainer.max_steps", "2", "--optim.warmup_steps", "1",
            "--trainer.out_dir", str(tmp_path), "--trainer.run_name", "t2i"]  # fmt: skip
    assert main(args) == 0
    out = tmp_path / "boots.png"
    assert main(["generate", str(tmp_path / "t2i"), "--prompt", "ankle boot", "--num", "2", "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 32
