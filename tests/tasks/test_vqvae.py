"""The VQ-VAE task: encode / decode agree with the forward pass, training on real images
lowers the reconstruction error and spreads the codes, bad input, and a whole run whose task
loads back by path as an image tokenizer with its reconstruction evaluation."""

import json

import pytest
import torch

from convergent.backbones import build_backbone
from convergent.cli import main
from convergent.data.builtin import fashion_mnist
from convergent.data.transforms import normalize
from convergent.evaluation.context import ImageTokenizer
from convergent.heads.conv_decoder import ConvDecoder
from convergent.tasks.configs import VQVAEConfig
from convergent.tasks.vqvae import VQVAE
from convergent.workflows.assemble import load_task_from_run
from convergent.workflows.evaluate import run_on_run


def tiny(**changes) -> VQVAE:
    torch.manual_seed(0)
    backbone = build_backbone("convnext_test", img_size=16)
    return VQVAE(backbone, VQVAEConfig(**{"num_codes": 16, "code_dim": 8, "decoder_width": 16, **changes}))


def test_encode_decode_is_the_forward_pass_in_eval_mode():
    task = tiny().eval()
    x = torch.randn(3, 3, 16, 16)
    ids = task.encode(x)
    s = task.stride
    assert ids.shape == (3, 16 // s, 16 // s) and ids.dtype == torch.long
    assert 0 <= int(ids.min()) and int(ids.max()) < 16
    out = task({"image": x}, return_outputs=True)
    torch.testing.assert_close(task.decode(ids), out["prediction"])
    assert out["mask_pixels"].shape == (3, 1, 16, 16) and bool(out["mask_pixels"].all())
    assert isinstance(task, ImageTokenizer) and task.num_codes == 16


def test_training_lowers_the_error_and_uses_more_codes():
    data = fashion_mnist.build("test", img_size=16, limit=64)  # real images (the package's or the bundled subset)
    x = normalize(torch.stack([torch.as_tensor(data[i]["image"]) for i in range(64)]).float(), (0.5,), (0.5,))
    task = tiny(restart_threshold=1.0).train()
    opt = torch.optim.Adam([p for p in task.parameters() if p.requires_grad], lr=2e-3)
    first = None
    for _ in range(60):
        out = task({"image": x})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first if first is not None else out["reconstruction"].item()
    assert out["reconstruction"].item() < 0.5 * first
    assert out["perplexity"].item() > 3 and out["codebook_usage"].item() > 0.25


def test_bad_input():
    task = tiny()
    with pytest.raises(ValueError, match="multiples of the encoder stride"):
        task({"image": torch.randn(1, 3, 15, 15)})
    with pytest.raises(ValueError, match=r"decode takes code ids \(B, h, w\)"):
        task.decode(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="powers of 2"):
        ConvDecoder(8, 3)
    with pytest.raises(ValueError, match="task 'vqvae' needs an image backbone"):
        VQVAE(build_backbone("text_test"), VQVAEConfig())


def test_decoder_upsamples_by_the_stride():
    for stride in (1, 2, 8):
        assert ConvDecoder(8, stride, 3, width=8)(torch.randn(2, 16, 8), (4, 4)).shape == (2, 3, 4 * stride, 4 * stride)


def test_a_run_is_an_image_tokenizer_loaded_by_path(tmp_path):
    args = ["pretrain", "--preset", "vqvae-fmnist", "--model.overrides", "{depths: [1, 1], dims: [8, 16]}",
            "--task.vqvae.num_codes", "32", "--task.vqvae.code_dim", "8", "--task.vqvae.decoder_width", "16",
            "--data.limit", "64", "--data.batch_size", "16", "--trainer.max_steps", "3", "--optim.warmup_steps", "1",
            "--eval.limit_train", "64", "--trainer.out_dir", str(tmp_path), "--trainer.run_name", "vq"]  # fmt: skip
    assert main(args) == 0
    run = tmp_path / "vq"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_psnr"] > 0 and 0 < summary["test_codebook_usage"] <= 1
    assert 1 <= summary["test_code_perplexity"] <= 32 and summary["test_reconstruction_images"] > 0
    assert "knn_acc" in summary  # the encoder's probes run as for any image run
    task, _, _ = load_task_from_run(run)
    assert isinstance(task, VQVAE)
    x = torch.randn(2, 3, 32, 32)
    assert task.encode(x).shape == (2, 8, 8)
    for path in (run, run / "image_tokenizer"):  # the saved tokenizer, by run or by its own directory
        saved = VQVAE.from_pretrained(path)
        assert torch.equal(saved.encode(x), task.encode(x))
        torch.testing.assert_close(saved.decode(task.encode(x)), task.decode(task.encode(x)))
    again = run_on_run("reconstruction", run)
    assert again["test_psnr"] == pytest.approx(summary["test_psnr"], rel=1e-5)
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"perplexity", "codebook_usage", "reconstruction", "commitment"} <= set(log[-1])


def test_tokenizer_directory_round_trip_and_errors(tmp_path):
    task = tiny().eval()
    task({"image": torch.randn(4, 3, 16, 16)})  # eval: no codebook update, but the round trip must keep it
    task.train()({"image": torch.randn(4, 3, 16, 16)})  # a trained codebook (not the initial one)
    task.eval().save_pretrained(tmp_path / "tok")
    back = VQVAE.from_pretrained(tmp_path / "tok")
    assert not back.training and back.num_codes == 16
    for k, v in task.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    with pytest.raises(FileNotFoundError, match="not an image tokenizer"):
        VQVAE.from_pretrained(tmp_path)
    (tmp_path / "tok" / "vqvae.json").write_text('{"num_codez": 3}')
    with pytest.raises(ValueError, match="not a vqvae config"):
        VQVAE.from_pretrained(tmp_path / "tok")
