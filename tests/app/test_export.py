"""``convergent export --format onnx``: both towers within 1e-4 of PyTorch with a batch other
than the traced one, the exported tokenizer gives the run's ids, and an index is searched from
the ONNX files without importing torch."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from convergent.app.export import export_onnx
from convergent.app.load import load_embedder
from convergent.app.onnx_model import OnnxEmbedder
from convergent.cli import main
from convergent.data.images import decode_array


@pytest.fixture(scope="module")
def onnx_dir(clip_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "clip"
    assert main(["export", str(clip_run), "--format", "onnx", "--out", str(out)]) == 0
    return out


def test_onnx_matches_pytorch(clip_run, onnx_dir, image_folder):
    manifest = json.loads((onnx_dir / "onnx.json").read_text())
    assert manifest["text"] == "text.onnx" and (onnx_dir / "tokenizer" / "tokenizer.json").is_file()
    torch_model, onnx_model = load_embedder(clip_run), load_embedder(onnx_dir)
    assert isinstance(onnx_model, OnnxEmbedder) and onnx_model.info == torch_model.info
    paths = sorted(image_folder.glob("img*.png"))
    pixels = np.stack([decode_array(str(p), onnx_model.info.img_size, 3) for p in paths])  # batch of 5
    assert np.abs(onnx_model.embed_images(pixels) - torch_model.embed_images(pixels)).max() <= 1e-4
    texts = ["a red heart", "grinning face", "dog", "a very long caption " * 20]
    assert np.array_equal(onnx_model.tokenize(texts)["input_ids"], torch_model.text_inputs(texts)["input_ids"].numpy())
    assert np.abs(onnx_model.embed_texts(texts) - torch_model.embed_texts(texts)).max() <= 1e-4


def test_encoder_export(clip_run, tmp_path):
    manifest = export_onnx(clip_run / "encoder", tmp_path / "enc")
    assert manifest["text"] is None and manifest["checked"]["image"] <= 1e-4 and manifest["model"]["kind"] == "image"


SEARCH_WITHOUT_TORCH = """
import json, sys
from convergent.cli import main
status = main(["search", sys.argv[1], "a red heart", "--model", sys.argv[2], "-k", "3", "--json"])
print(json.dumps({"status": status, "torch": "torch" in sys.modules}))
"""


def test_search_and_index_on_onnx_without_torch(clip_run, onnx_dir, image_folder, tmp_path):
    out = tmp_path / "idx"
    assert main(["index", str(clip_run), "--images", str(image_folder), "--out", str(out), "--quiet"]) == 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", SEARCH_WITHOUT_TORCH, str(out), str(onnx_dir)], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    last = json.loads(done.stdout.strip().splitlines()[-1])
    assert last == {"status": 0, "torch": False}, done.stderr
    results = json.loads("\n".join(done.stdout.strip().splitlines()[:-1]))["results"]
    assert len(results) == 3
    # an index made from the export is the run's index too (same weights fingerprint)
    assert main(["index", str(onnx_dir), "--out", str(out), "--quiet"]) == 0


def test_export_refuses_what_it_cannot(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    assert main(["export", str(tmp_path / "x"), "--format", "onnx"]) == 2
    assert "not a run directory" in capsys.readouterr().err
