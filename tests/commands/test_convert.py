"""``convergent convert`` end to end: a tiny random HF model (BERT, ViT, Swin, Swin V2) saved
by transformers → convergent (outputs match HF) → HF again (transformers loads it, outputs
match), plus official Swin checkpoints and the one-line errors for bad input."""

import importlib.util
import json
import shutil
import subprocess
import sys

import pytest
import torch

from convergent.backbones.pretrained import from_pretrained
from convergent.cli import main
from convergent.converters.hf import hf_converters

transformers = pytest.importorskip("transformers")

TOL = 1e-5


def need(module: str) -> None:
    """Skip while the converter module of a model kind is not written yet."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} does not exist yet")


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Noticeable random weights (norm weights around 1), so a wrong mapping cannot pass."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.1
            p.copy_(noise + 1.0 if name.endswith("weight") and p.ndim == 1 else noise)
    return model.eval()


def bert(head: bool = False):
    c = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return transformers.BertForMaskedLM(c) if head else transformers.BertModel(c)


def vit(head: bool = False):
    c = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=5,
    )  # fmt: skip
    return transformers.ViTForImageClassification(c) if head else transformers.ViTModel(c)


def swin(version: int, head: bool = False):
    kw = dict(image_size=32, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4, num_labels=5)
    if version == 2:
        c = transformers.Swinv2Config(**kw)
        return transformers.Swinv2ForImageClassification(c) if head else transformers.Swinv2Model(c)
    c = transformers.SwinConfig(**kw)
    return transformers.SwinForImageClassification(c) if head else transformers.SwinModel(c)


CASES = {  # name -> (converter module, HF model factory, input maker)
    "bert": ("convergent.converters.hf_bert", bert, lambda: torch.randint(0, 100, (2, 12))),
    "vit": ("convergent.converters.hf_vit", vit, lambda: torch.randn(2, 3, 32, 32)),
    "swin": ("convergent.converters.hf_swin", lambda **kw: swin(1, **kw), lambda: torch.randn(2, 3, 32, 32)),
    "swinv2": ("convergent.converters.hf_swin", lambda **kw: swin(2, **kw), lambda: torch.randn(2, 3, 32, 32)),
}


def hf_outputs(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(last hidden state, pooler output or None) of a HF base model."""
    key = "input_ids" if x.dtype == torch.long else "pixel_values"
    with torch.no_grad():
        out = model(**{key: x})
    return out.last_hidden_state, getattr(out, "pooler_output", None)


def convert(*argv: str, capsys) -> str:
    """Run ``convergent convert`` in-process; return its one-line summary."""
    assert main(["convert", *map(str, argv)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and out.startswith("converted "), out
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_hf_to_convergent_and_back(name, tmp_path, capsys):
    module, factory, make_input = CASES[name]
    need(module)
    hf = randomize(factory())
    hf.save_pretrained(tmp_path / "hf")
    x = make_input()
    ref_tokens, ref_pooled = hf_outputs(hf, x)

    convert(tmp_path / "hf", tmp_path / "ours", "--from", "hf", capsys=capsys)
    ours = from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        tokens = ours.forward_features(x)
        torch.testing.assert_close(tokens, ref_tokens, atol=TOL, rtol=TOL)
        if ref_pooled is not None:
            torch.testing.assert_close(ours.pooled(tokens), ref_pooled, atol=TOL, rtol=TOL)

    summary = convert(tmp_path / "ours", tmp_path / "back", "--from", "convergent", "--to", "hf", capsys=capsys)
    assert str(tmp_path / "back") in summary
    back, info = transformers.AutoModel.from_pretrained(tmp_path / "back", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    tokens, pooled = hf_outputs(back.eval(), x)
    torch.testing.assert_close(tokens, ref_tokens, atol=TOL, rtol=TOL)
    if ref_pooled is not None:
        torch.testing.assert_close(pooled, ref_pooled, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("name", ["vit", "swin", "bert"])
def test_legacy_key_names_load_in_transformers(name, tmp_path, capsys):
    module, factory, make_input = CASES[name]
    need(module)
    hf = randomize(factory())
    hf.save_pretrained(tmp_path / "hf")
    convert(tmp_path / "hf", tmp_path / "ours", "--from", "hf", capsys=capsys)
    summary = convert(tmp_path / "ours", tmp_path / "legacy", "--from", "convergent", "--legacy", capsys=capsys)
    assert "4.x key names" in summary
    back, info = transformers.AutoModel.from_pretrained(tmp_path / "legacy", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    x = make_input()
    torch.testing.assert_close(hf_outputs(back.eval(), x)[0], hf_outputs(hf, x)[0], atol=TOL, rtol=TOL)


@pytest.mark.parametrize("name, head", [("bert", "cls."), ("vit", "classifier."), ("swinv2", "classifier.")])
def test_task_heads_are_ignored_and_reported(name, head, tmp_path, capsys):
    module, factory, make_input = CASES[name]
    need(module)
    hf = randomize(factory(head=True))
    hf.save_pretrained(tmp_path / "hf")
    summary = convert(tmp_path / "hf", tmp_path / "ours", "--from", "hf", capsys=capsys)
    assert "ignored" in summary and head in summary
    ours = from_pretrained(tmp_path / "ours").eval()
    x = make_input()
    base = getattr(hf, hf.base_model_prefix)
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_features(x), hf_outputs(base, x)[0], atol=TOL, rtol=TOL)


def test_pytorch_model_bin_is_read(tmp_path, capsys):
    need("convergent.converters.hf_bert")
    hf = randomize(bert())
    src = tmp_path / "hf"
    src.mkdir()
    (src / "config.json").write_text(hf.config.to_json_string())
    torch.save(hf.state_dict(), src / "pytorch_model.bin")
    convert(src, tmp_path / "ours", "--from", "hf", capsys=capsys)
    x = CASES["bert"][2]()
    with torch.no_grad():
        ours = from_pretrained(tmp_path / "ours").eval()
        torch.testing.assert_close(ours.forward_features(x), hf_outputs(hf, x)[0], atol=TOL, rtol=TOL)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_official_swin_checkpoint(suffix, tmp_path, capsys):
    need("convergent.converters.official_swin")
    from safetensors.torch import save_file

    from convergent.backbones import build_backbone
    from tests.converters.test_official_swin import to_official

    model = randomize(build_backbone("swinv2_test", img_size=64, drop_path=0.0))
    checkpoint = to_official(model)
    src = tmp_path / f"swin{suffix}"
    if suffix == ".pth":
        torch.save(checkpoint, src)
    else:
        save_file({k: v.contiguous() for k, v in checkpoint["model"].items()}, str(src))
    summary = convert(src, tmp_path / "ours", "--from", "official-swin", "--img_size", "64", capsys=capsys)
    assert "official Swin V2" in summary and "head.weight" in summary
    ours = from_pretrained(tmp_path / "ours").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), model(x), atol=TOL, rtol=TOL)


# --- bad input: exit 2, one line naming the file -------------------------------------------------


def fails(argv: list, capsys) -> str:
    assert main(["convert", *map(str, argv)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("convergent convert: error: "), err
    return err


def test_missing_config_json_is_named(tmp_path, capsys):
    src = tmp_path / "hf"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"")
    err = fails([src, tmp_path / "out", "--from", "hf"], capsys)
    assert str(src / "config.json") in err and "missing" in err


def test_missing_config_json_through_the_console_script(tmp_path):
    (tmp_path / "hf").mkdir()
    exe = shutil.which("convergent")
    cmd = [exe] if exe else [sys.executable, "-m", "convergent.cli"]
    argv = [*cmd, "convert", tmp_path / "hf", tmp_path / "out", "--from", "hf"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "config.json" in out.stderr and "Traceback" not in out.stderr


def test_missing_weights_are_named(tmp_path, capsys):
    src = tmp_path / "hf"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "bert"}))
    err = fails([src, tmp_path / "out", "--from", "hf"], capsys)
    assert "model.safetensors" in err and "pytorch_model.bin" in err


@pytest.mark.parametrize("file, content", [("config.json", "{not json"), ("model.safetensors", "garbage")])
def test_corrupt_files_are_named(file, content, tmp_path, capsys):
    src = tmp_path / "hf"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (src / "model.safetensors").write_bytes(b"\x00\x01")
    (src / file).write_text(content)
    err = fails([src, tmp_path / "out", "--from", "hf"], capsys)
    assert str(src / file) in err


def test_unknown_model_type_lists_the_supported_ones(tmp_path, capsys):
    from safetensors.torch import save_file

    src = tmp_path / "hf"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    save_file({"w": torch.zeros(1)}, str(src / "model.safetensors"))
    err = fails([src, tmp_path / "out", "--from", "hf"], capsys)
    supported = ", ".join(sorted(hf_converters()))  # every family's HF_MODEL_TYPES
    assert "'gpt2'" in err and "bert, " in supported and supported in err


def test_missing_source_and_bad_convergent_dir(tmp_path, capsys):
    assert "does not exist" in fails([tmp_path / "nope", tmp_path / "out", "--from", "hf"], capsys)
    (tmp_path / "empty").mkdir()
    assert "config.json" in fails([tmp_path / "empty", tmp_path / "out", "--from", "convergent"], capsys)
    assert "swin.pth" in fails([tmp_path / "swin.pth", tmp_path / "out", "--from", "official-swin"], capsys)


def test_pickled_code_is_refused(tmp_path, capsys):
    src = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": Exception("not a tensor")}, src)
    err = fails([src, tmp_path / "out", "--from", "official-swin"], capsys)
    assert str(src) in err and "weights_only" in err
