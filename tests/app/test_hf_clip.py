"""A converted HF CLIP (tiny, random weights) is a model image search takes: it indexes a
folder, answers text and image queries, and exports to ONNX within 1e-4 of PyTorch."""

import json

import pytest
import torch

from convergent.cli import main

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    from tests.commands.test_convert_clip import MEAN, STD, TEXT, VISION, _randomize, clip_tokenizer

    torch.manual_seed(0)
    model = transformers.CLIPModel(transformers.CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=20))
    _randomize(model, seed=0)
    hf = tmp_path_factory.mktemp("hf") / "clip"
    model.save_pretrained(hf)
    clip_tokenizer().save_pretrained(hf)
    (hf / "preprocessor_config.json").write_text(json.dumps({"image_mean": MEAN, "image_std": STD}))
    out = tmp_path_factory.mktemp("runs") / "clip"
    assert main(["convert", str(hf), str(out), "--from", "hf"]) == 0
    return out


def test_converted_hf_clip_indexes_searches_and_exports(converted, image_folder, tmp_path, capsys):
    index = tmp_path / "idx"
    assert main(["index", str(converted), "--images", str(image_folder), "--out", str(index), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["search", str(index), "a cat", "-k", "3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 3
    assert main(["search", str(index), "--image", str(image_folder / "img0.png"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["name"] == "img0.png"
    onnx = tmp_path / "onnx"
    assert main(["export", str(converted), "--format", "onnx", "--out", str(onnx)]) == 0
    assert "text (max |ONNX - PyTorch|" in capsys.readouterr().out
    assert main(["search", str(index), "a cat", "-k", "3", "--model", str(onnx), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 3
