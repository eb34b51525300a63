"""SimMIM: loss and reconstruction parity with HF ``Swinv2ForMaskedImageModeling`` /
``SwinForMaskedImageModeling`` / ``ViTForMaskedImageModeling``; capability checks; masks from
the global RNG; the loss falls when training."""

import math

import pytest
import torch
import transformers
from torch import nn

from convergent.backbones import ViTConfig, build_backbone
from convergent.backbones.vit import VisionTransformer
from convergent.converters import hf_swin, hf_vit
from convergent.losses.reconstruction import local_normalize, masked_l1
from convergent.tasks.configs import SimMIMConfig
from convergent.tasks.registry import build_task
from convergent.tasks.simmim import SimMIM, decoder_state_dict_from_hf
from tests.conftest import randomize_
from tests.task_helpers import train_steps

SWIN = {
    1: (transformers.SwinConfig, transformers.SwinForMaskedImageModeling),
    2: (transformers.Swinv2Config, transformers.Swinv2ForMaskedImageModeling),
}


def _swin_pair(version: int):
    config_cls, model_cls = SWIN[version]
    cfg = config_cls(
        image_size=32, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4, encoder_stride=8
    )
    cfg.drop_path_rate = 0.0
    hm = randomize_(model_cls(cfg)).eval()
    ours_cfg = hf_swin.config_from_hf(hm.config.to_dict())
    backbone = build_backbone(ours_cfg)
    backbone.load_weights(hf_swin.state_dict_from_hf(hm.state_dict(), ours_cfg))
    return hm, backbone


def _vit_pair():
    cfg = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, encoder_stride=8,
    )
    hm = randomize_(transformers.ViTForMaskedImageModeling(cfg)).eval()
    ours_cfg = hf_vit.config_from_hf(hm.config.to_dict())
    backbone = build_backbone(ours_cfg)
    backbone.load_weights(hf_vit.state_dict_from_hf(hm.state_dict(), ours_cfg))
    return hm, backbone


@pytest.mark.parametrize("family", ["swinv2", "swin", "vit"])
def test_loss_parity_with_hf(family):
    hm, backbone = _vit_pair() if family == "vit" else _swin_pair(2 if family == "swinv2" else 1)
    task = SimMIM(backbone, SimMIMConfig(mask_patch_size=8, mask_ratio=0.5)).eval()
    assert task.encoder_stride == 8  # derived: 32 px / 4x4 output tokens
    task.decoder.load_state_dict(decoder_state_dict_from_hf(hm.state_dict()))
    x = torch.randn(3, 3, 32, 32)
    mask = task.draw_mask(3, 32, 32, torch.device("cpu"))
    ref = hm(pixel_values=x, bool_masked_pos=mask)
    out = task({"image": x, "mask": mask}, return_outputs=True)
    assert abs(out["loss"].item() - ref.loss.item()) <= 1e-5
    assert out["prediction"].shape == ref.reconstruction.shape == x.shape
    assert (out["prediction"] - ref.reconstruction).abs().max() <= 1e-5
    assert out["mask_pixels"].shape == (3, 1, 32, 32)
    assert out["masked_pixels"].item() == pytest.approx(0.5)
    # the mask matters: another mask gives another loss (both here and in HF)
    other = task({"image": x, "mask": ~mask})["loss"]
    assert abs(other.item() - out["loss"].item()) > 1e-3
    assert abs(other.item() - hm(pixel_values=x, bool_masked_pos=~mask).loss.item()) <= 1e-5


def test_norm_target_regresses_locally_normalised_pixels():
    """With ``norm_target`` the loss is the L1 against each pixel standardised over the window
    around it (official Swin V2 SimMIM); the prediction itself is unchanged."""
    task = SimMIM(build_backbone("swinv2_test", drop_path=0.0), SimMIMConfig(mask_patch_size=8)).eval()
    normed = SimMIM(task.backbone, SimMIMConfig(mask_patch_size=8, norm_target=True, norm_target_window=5)).eval()
    normed.decoder.load_state_dict(task.decoder.state_dict())
    x = torch.randn(2, 3, 32, 32) * 3 + 1
    mask = task.draw_mask(2, 32, 32, torch.device("cpu"))
    raw = task({"image": x, "mask": mask}, return_outputs=True)
    out = normed({"image": x, "mask": mask}, return_outputs=True)
    assert torch.equal(raw["prediction"], out["prediction"])
    want = masked_l1(out["prediction"], local_normalize(x, 5), out["mask_pixels"])
    assert abs(out["loss"].item() - want.item()) <= 1e-6
    assert abs(out["loss"].item() - raw["loss"].item()) > 1e-2


def test_encoder_stride_derived_for_four_stages():
    backbone = build_backbone(
        "swinv2_test", img_size=64, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), drop_path=0.0
    )
    task = build_task("simmim", backbone, SimMIMConfig(mask_patch_size=16))
    assert task.encoder_stride == 32 and task.decoder.proj.out_channels == 32 * 32 * 3
    out = task({"image": torch.randn(2, 3, 64, 64)}, return_outputs=True)
    assert out["prediction"].shape == (2, 3, 64, 64)
    assert build_task("simmim", build_backbone("vit_test"), SimMIMConfig(mask_patch_size=16)).encoder_stride == 8
    explicit = SimMIM(build_backbone("vit_test"), SimMIMConfig(mask_patch_size=16, encoder_stride=8))
    assert explicit.encoder_stride == 8


class _NoMaskToken(VisionTransformer):
    supports_mask_token = False


def test_refuses_backbone_without_mask_token():
    with pytest.raises(ValueError, match="simmim.*needs a backbone with mask_token.*_NoMaskToken"):
        SimMIM(_NoMaskToken(ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)), SimMIMConfig())
    with pytest.raises(ValueError, match="needs an image backbone .TextTransformer reads text"):
        SimMIM(build_backbone("text_test"), SimMIMConfig())


def test_bad_configs_and_masks_are_clear():
    with pytest.raises(ValueError, match="mask_patch_size 12 must be a multiple of the backbone's patch_size 8"):
        SimMIM(build_backbone("vit_test"), SimMIMConfig(mask_patch_size=12))
    task = SimMIM(build_backbone("vit_test"), SimMIMConfig(mask_patch_size=16))
    with pytest.raises(ValueError, match=r"batch\['mask'\] must be \(B=2, 16\)"):
        task({"image": torch.randn(2, 3, 32, 32), "mask": torch.zeros(2, 15, dtype=torch.bool)})


def test_default_mask_from_global_rng():
    task = SimMIM(build_backbone("swinv2_test", drop_path=0.0), SimMIMConfig(mask_patch_size=8, mask_ratio=0.6)).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(5)
    a = task({"image": x}, return_outputs=True)
    torch.manual_seed(5)
    b = task({"image": x}, return_outputs=True)
    c = task({"image": x}, return_outputs=True)
    assert torch.equal(a["mask_pixels"], b["mask_pixels"]) and a["loss"].item() == b["loss"].item()
    assert not torch.equal(b["mask_pixels"], c["mask_pixels"])
    assert a["masked_pixels"].item() == pytest.approx(math.ceil(0.6 * 16) / 16)


def test_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    task = SimMIM(build_backbone("swinv2_test", drop_path=0.0), SimMIMConfig(mask_patch_size=8)).train()
    smooth = nn.functional.interpolate(torch.randn(4, 3, 4, 4), size=(32, 32), mode="bilinear")  # learnable images
    batch = {"image": smooth, "mask": task.draw_mask(4, 32, 32, torch.device("cpu"))}
    losses, _ = train_steps(task, batch, 60, lr=2e-3)
    assert task.backbone.mask_token.grad is not None and task.backbone.mask_token.grad.abs().sum() > 0
    assert losses[-1] < 0.75 * losses[0], losses
