"""Backbone train-step throughput (forward + backward + AdamW) against HF transformers.

    python benchmarks/backbones.py                 # both cases, 2 threads, median of 5
    python benchmarks/backbones.py --case swinv2 --reps 3 --compile

Cases (BENCHMARKS.md): Swin V2 Tiny at 192 px / window 6, batch 8, vs HF ``Swinv2Model``
(eager attention); ViT-B/16 at 224 px, batch 8, vs HF ``ViTModel`` (SDPA). Both models get
the same weights (converted); the loss is the mean square of the final tokens. "vs HF": HF
with the same optimizer (fused AdamW), the model-side comparison; "vs HF default AdamW": HF
with ``torch.optim.AdamW()`` defaults, the recipe the BENCHMARKS.md peer numbers were taken
with. Also prints achieved GFLOP/s against the measured matmul peak and each model's peak
memory (a fresh subprocess per model: the RSS high-water mark of two train steps above the
RSS after building).
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Case, benchmark_main  # noqa: E402


def build_swinv2(batch: int) -> Case:
    import transformers

    from convergent.backbones import build_backbone
    from convergent.converters import hf_swin

    ours = build_backbone("swinv2_tiny", img_size=192, window_size=6, drop_path=0.0)
    hf = transformers.Swinv2Model(transformers.Swinv2Config(**hf_swin.config_to_hf(ours.config)))
    hf.load_state_dict(hf_swin.state_dict_to_hf(ours.state_dict(), ours.config))
    x = torch.randn(batch, 3, 192, 192)
    return Case(ours, hf, lambda: ours(x).square().mean(), lambda: hf(pixel_values=x).last_hidden_state.square().mean(),
                lambda compiled: lambda: compiled(x).square().mean())  # fmt: skip


def build_vit(batch: int) -> Case:
    import transformers

    from convergent.backbones import build_backbone
    from convergent.converters import hf_vit

    ours = build_backbone("vit_base_patch16")
    hf = transformers.ViTModel(transformers.ViTConfig(**hf_vit.config_to_hf(ours.config)), add_pooling_layer=False)
    hf.load_state_dict(hf_vit.state_dict_to_hf(ours.state_dict(), ours.config))
    x = torch.randn(batch, 3, 224, 224)
    return Case(ours, hf, lambda: ours(x).square().mean(), lambda: hf(pixel_values=x).last_hidden_state.square().mean(),
                lambda compiled: lambda: compiled(x).square().mean())  # fmt: skip


CASES = {"vit": ("ViT-B/16 224px", build_vit), "swinv2": ("Swin V2 Tiny 192px w6", build_swinv2)}

if __name__ == "__main__":
    benchmark_main(CASES, __file__, __doc__)
