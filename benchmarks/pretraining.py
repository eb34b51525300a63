"""Pre-training train-step throughput (forward + backward + AdamW) against HF transformers.

    python benchmarks/pretraining.py                  # both cases, 2 threads, median of 5
    python benchmarks/pretraining.py --case simmim --reps 3 --compile
    python benchmarks/pretraining.py --device cuda --dtype bf16 --batch 128 --case mae --case simmim_base

Cases (BENCHMARKS.md):
* SimMIM, Swin V2 Tiny, 192 px, window 6, 32-px mask squares at 0.6, batch 8: our ``simmim``
  task vs HF ``Swinv2ForMaskedImageModeling`` (eager attention), the same mask;
* ``simmim_base``: the same with Swin V2 Base, window 12 (the GPU row: ``--device cuda --dtype bf16``);
* MAE, ViT-B/16, 224 px, mask 0.75, decoder 512 x 8, batch 8: our ``mae`` task vs HF
  ``ViTMAEForPreTraining`` (SDPA), the same noise.
Both sides use fused AdamW ("vs HF"); "vs HF default AdamW" times HF with ``torch.optim.AdamW()``
defaults. Peak memory: a fresh subprocess per model (see benchmarks/common.py).
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Case, benchmark_main  # noqa: E402


def simmim_case(variant: str, window: int):
    return lambda batch: build_simmim(batch, variant, window)


def build_simmim(batch: int, variant: str, window: int) -> Case:
    import transformers

    from convergent.backbones import build_backbone
    from convergent.converters import hf_swin
    from convergent.tasks.configs import SimMIMConfig
    from convergent.tasks.simmim import SimMIM

    backbone = build_backbone(variant, img_size=192, window_size=window, drop_path=0.0)
    ours = SimMIM(backbone, SimMIMConfig(mask_patch_size=32, mask_ratio=0.6))
    hf_cfg = transformers.Swinv2Config(**hf_swin.config_to_hf(backbone.config), encoder_stride=32)
    hf = transformers.Swinv2ForMaskedImageModeling(hf_cfg)
    x = torch.randn(batch, 3, 192, 192)
    mask = ours.draw_mask(batch, 192, 192, x.device)  # (B, 48*48) at the model's patch grid
    return Case(ours, hf, lambda: ours({"image": x, "mask": mask})["loss"],
                lambda: hf(pixel_values=x, bool_masked_pos=mask).loss,
                lambda compiled: lambda: compiled({"image": x, "mask": mask})["loss"])  # fmt: skip


def build_mae(batch: int) -> Case:
    import transformers

    from convergent.backbones import build_backbone
    from convergent.tasks.configs import MAEConfig
    from convergent.tasks.mae import MAE

    backbone = build_backbone("vit_base_patch16")
    ours = MAE(backbone, MAEConfig(mask_ratio=0.75, decoder_dim=512, decoder_depth=8, decoder_heads=16))
    hf = transformers.ViTMAEForPreTraining(transformers.ViTMAEConfig(mask_ratio=0.75, norm_pix_loss=True))
    x = torch.randn(batch, 3, 224, 224)
    noise = torch.rand(batch, 196)
    return Case(ours, hf, lambda: ours({"image": x, "noise": noise})["loss"],
                lambda: hf(pixel_values=x, noise=noise).loss,
                lambda compiled: lambda: compiled({"image": x, "noise": noise})["loss"])  # fmt: skip


CASES = {
    "mae": ("MAE ViT-B/16 224px", build_mae),
    "simmim": ("SimMIM Swin V2 Tiny 192px w6", simmim_case("swinv2_tiny", 6)),
    "simmim_base": ("SimMIM Swin V2 Base 192px w12", simmim_case("swinv2_base", 12)),
}

if __name__ == "__main__":
    benchmark_main(CASES, __file__, __doc__)
