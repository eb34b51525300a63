"""Exact resume of the generation tasks through the CLI (vqvae, beit, text-to-image, caption):
a tiny run of each preset to 4 steps, and a copy rolled back to its step-2 checkpoint and
resumed, end with identical weights (the frozen tokenizers come from the checkpoints)."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

from convergent.cli import main
from convergent.training.checkpoint import load_latest
from tests.preset_helpers import stand_in_tokenizer

COMMON = ["--data.batch_size", "8", "--data.limit", "32", "--optim.warmup_steps", "1", "--trainer.max_steps", "4",
          "--trainer.checkpoint_every", "2", "--eval.knn", "false", "--eval.linear_probe", "false"]  # fmt: skip
TINY_TEXT = "{depth: 2, embed_dim: 32, num_heads: 2, mlp_dim: 64, dropout: 0.1, attn_dropout: 0.1, max_position: 16}"
RUNS = {
    "vqvae": ["--preset", "vqvae-fmnist", "--model.overrides", "{depths: [1, 1], dims: [8, 16]}",
              "--task.vqvae.num_codes", "16", "--task.vqvae.code_dim", "8", "--task.vqvae.decoder_width", "8"],
    "beit": ["--preset", "beit-vit-fmnist", "--task.beit.tokenizer", "{tok}", "--model.overrides",
             "{pos_embed: none, rel_pos_bias: shared, layer_scale: 0.1, depth: 2, embed_dim: 32, num_heads: 2, "
             "mlp_dim: 64, drop_path: 0.1}", "--eval.layer", "1"],
    "dalle": ["--preset", "dalle-emoji", "--task.text_to_image.tokenizer", "{tok}", "--model.overrides", TINY_TEXT,
              "--data.vocab_size", "300"],
    "caption": ["--preset", "caption-vit-emoji", "--model.backbone", "vit_test", "--model.overrides",
                "{img_size: 32, patch_size: 8}", "--task.caption.text_backbone", "text_test",
                "--task.caption.text_overrides", "{dropout: 0.1}", "--data.vocab_size", "300"],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(RUNS))
def test_resume_is_exact(name, tmp_path):
    stand_in_tokenizer(4, 32).save_pretrained(tmp_path / "tok")
    args = [a.replace("{tok}", str(tmp_path / "tok")) for a in RUNS[name]]
    assert main(["pretrain", *args, *COMMON, "--trainer.out_dir", str(tmp_path), "--trainer.run_name", "a"]) == 0
    run, copy = tmp_path / "a", tmp_path / "b"
    straight = load_latest(run)
    step2 = load_file(run / "checkpoints" / "step-000002" / "model.safetensors")
    assert any(not torch.equal(step2[k], v) for k, v in straight.weights.items())  # steps 3-4 changed weights
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "checkpoints" / "step-000004")
    (copy / "checkpoints" / "latest").write_text("step-000002\n")
    shutil.rmtree(copy / "encoder")
    (copy / "summary.json").unlink()
    assert main(["pretrain", "--resume", str(copy)]) == 0
    resumed = load_latest(copy)
    assert straight.step == resumed.step == 4
    for k, v in straight.weights.items():
        assert torch.equal(resumed.weights[k], v), k
