"""MAE: loss parity with HF ``ViTMAEForPreTraining`` given the same noise (norm_pix on and off),
decoder weight mapping (5.x and 4.x layouts), fixed sin-cos positions, capability checks, and
the loss falls when training. ``masked_mse`` and the patchify order:
``tests/losses/test_reconstruction.py``."""

import pytest
import torch
import transformers
from transformers.models.vit_mae.modeling_vit_mae import build_2d_sinusoidal_position_embedding

from convergent.backbones import ViTConfig, build_backbone
from convergent.converters import hf_vit
from convergent.heads.pixel_decoder import MAEDecoder, sincos_pos_embed_2d
from convergent.masking import random_masking
from convergent.tasks.configs import MAEConfig
from convergent.tasks.mae import MAE, decoder_state_dict_from_hf
from tests.conftest import randomize_
from tests.task_helpers import train_steps


def hf_sincos(grid: int, dim: int) -> torch.Tensor:
    """HF ViTMAE's fixed embedding, halves rotated as in its ``initialize_weights`` (MAE's layout)."""
    e = build_2d_sinusoidal_position_embedding(grid, grid, dim, cls_token=True)
    return torch.cat([e[..., dim // 2 :], e[..., : dim // 2]], dim=-1)


def _pair(norm_pix: bool, mask_ratio: float = 0.75):
    cfg = transformers.ViTMAEConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, decoder_hidden_size=16, decoder_num_hidden_layers=2,
        decoder_num_attention_heads=2, decoder_intermediate_size=64, norm_pix_loss=norm_pix, mask_ratio=mask_ratio,
    )
    hm = randomize_(transformers.ViTMAEForPreTraining(cfg)).eval()
    with torch.no_grad():  # HF's fixed sin-cos positions (what pre-trained checkpoints hold)
        hm.vit.embeddings.position_embeddings.copy_(hf_sincos(4, 32)[None])
        hm.decoder.decoder_pos_embed.copy_(hf_sincos(4, 16)[None])
    ours_cfg = ViTConfig(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_dim=64, norm_eps=cfg.layer_norm_eps
    )
    backbone = build_backbone(ours_cfg)
    backbone.load_weights(hf_vit.state_dict_from_hf(hm.state_dict(), ours_cfg))  # decoder.* skipped
    task = MAE(backbone, MAEConfig(mask_ratio, decoder_dim=16, decoder_depth=2, decoder_heads=2, norm_pix_loss=norm_pix))
    task.decoder.load_state_dict(decoder_state_dict_from_hf(hm.state_dict()))
    return hm, task.eval()


@pytest.mark.parametrize("norm_pix", [True, False])
def test_loss_parity_with_hf(norm_pix):
    hm, task = _pair(norm_pix)
    x = torch.randn(3, 3, 32, 32)
    noise = torch.rand(3, 16)
    ref = hm(pixel_values=x, noise=noise)
    out = task({"image": x, "noise": noise}, return_outputs=True)
    assert abs(out["loss"].item() - ref.loss.item()) <= 1e-5
    ids_keep, mask, ids_restore = random_masking(3, 16, 0.75, noise=noise)
    assert torch.equal(mask.float(), ref.mask) and torch.equal(ids_restore, ref.ids_restore)
    logits = task.decoder(task.backbone.forward_features(x, keep=ids_keep), ids_restore)
    assert (logits - ref.logits).abs().max() <= 1e-5
    assert out["mask_pixels"].shape == (3, 1, 32, 32)
    assert out["mask_pixels"].float().mean().item() == pytest.approx(0.75)
    if not norm_pix:
        assert (out["prediction"] - hm.unpatchify(ref.logits)).abs().max() <= 1e-5
    # other noise, other loss, still equal to HF's
    noise2 = torch.rand(3, 16)
    other = task({"image": x, "noise": noise2})["loss"].item()
    assert abs(other - out["loss"].item()) > 1e-4
    assert abs(other - hm(pixel_values=x, noise=noise2).loss.item()) <= 1e-5


def test_sincos_matches_hf_and_decoder_buffer():
    for grid, dim in ((4, 16), (14, 64)):
        assert torch.allclose(sincos_pos_embed_2d(grid, dim), hf_sincos(grid, dim), atol=1e-6)
    dec = MAEDecoder(16, 32, 16, 1, 2, 8, 3)
    assert torch.allclose(dec.pos_embed[0], hf_sincos(4, 16), atol=1e-6)
    assert "pos_embed" in dec.state_dict() and "pos_embed" not in dict(dec.named_parameters())


def test_legacy_decoder_layout_and_unknown_keys():
    hm, task = _pair(True)
    sd = hm.state_dict()
    legacy = {}
    renames = {
        ".attention.q_proj.": ".attention.attention.query.",
        ".attention.k_proj.": ".attention.attention.key.",
        ".attention.v_proj.": ".attention.attention.value.",
        ".attention.o_proj.": ".attention.output.dense.",
        ".mlp.fc1.": ".intermediate.dense.",
        ".mlp.fc2.": ".output.dense.",
    }
    for k, v in sd.items():
        for a, b in renames.items():
            k = k.replace(a, b)
        legacy[k] = v
    assert "decoder.decoder_layers.1.attention.attention.query.weight" in legacy
    converted = decoder_state_dict_from_hf(legacy)
    for k, v in task.decoder.state_dict().items():
        assert torch.equal(converted[k], v), k
    with pytest.raises(KeyError, match="surprise"):
        decoder_state_dict_from_hf({**sd, "decoder.decoder_layers.0.surprise": torch.zeros(1)})
    del sd["decoder.decoder_norm.bias"]
    with pytest.raises(KeyError, match="decoder.decoder_norm.bias"):
        decoder_state_dict_from_hf(sd)


def test_refuses_swin_backbone():
    with pytest.raises(ValueError, match="'mae' needs a backbone with token_drop .SwinTransformer has none"):
        MAE(build_backbone("swinv2_test"), MAEConfig(decoder_dim=16, decoder_depth=1, decoder_heads=2))


def test_random_noise_from_global_rng_and_outputs():
    task = MAE(build_backbone("vit_test"), MAEConfig(decoder_dim=16, decoder_depth=1, decoder_heads=2)).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)
    a = task({"image": x}, return_outputs=True)
    torch.manual_seed(1)
    b = task({"image": x}, return_outputs=True)
    c = task({"image": x}, return_outputs=True)
    assert a["loss"].item() == b["loss"].item() and torch.equal(a["mask_pixels"], b["mask_pixels"])
    assert not torch.equal(b["mask_pixels"], c["mask_pixels"])
    assert a["prediction"].shape == x.shape
    assert "decoder.mask_token" in task.no_weight_decay() and "decoder.pos_embed" not in task.no_weight_decay()


def test_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    task = MAE(build_backbone("vit_test"), MAEConfig(decoder_dim=32, decoder_depth=1, decoder_heads=2)).train()
    smooth = torch.nn.functional.interpolate(torch.randn(4, 3, 4, 4), size=(32, 32), mode="bilinear")
    batch = {"image": smooth, "noise": torch.rand(4, 16)}
    losses, _ = train_steps(task, batch, 30, lr=2e-3)
    assert task.decoder.mask_token.grad.abs().sum() > 0
    assert losses[-1] < 0.75 * losses[0], losses
