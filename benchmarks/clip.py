"""CLIP train-step throughput (forward + backward + AdamW) against HF transformers.

    python benchmarks/clip.py                          # CLIP ViT-B/32 + 512 x 12 text, batch 16
    python benchmarks/clip.py --case tiny --reps 2 --no-memory   # a smoke test in seconds

Cases:
* ``b32`` (BENCHMARKS.md): CLIP ViT-B/32 at 224 px + the 512-wide, 12-block causal text tower
  (vocab 49408, context 77), joint width 512, batch 16: our ``clip`` task vs HF ``CLIPModel``
  (SDPA), the same weights (converted), the same images and texts (lengths 8..77, right
  padded, end-of-text last), both in train mode, ``return_loss=True`` on the HF side;
* ``tiny``: the ``vit_clip_test`` / ``clip_text_test`` towers at 32 px, context 16.
Both sides use fused AdamW ("vs HF"); "vs HF default AdamW" times HF with ``torch.optim.AdamW()``
defaults. Throughput counts image–text pairs. Run with ``--batch 16`` for the BENCHMARKS.md row.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Case, benchmark_main  # noqa: E402


def clip_case(image: str, text: str, context: int, embed_dim: int):
    def build(batch: int) -> Case:
        import transformers

        from convergent.backbones import build_backbone
        from convergent.converters.hf_clip import CLIPTowers, config_to_hf, state_dict_to_hf
        from convergent.tasks.clip import CLIP
        from convergent.tasks.configs import CLIPConfig

        ours = CLIP(build_backbone(image), CLIPConfig(embed_dim=embed_dim), text_backbone=build_backbone(text))
        towers = CLIPTowers(ours.backbone.config, ours.text_backbone.config, embed_dim)
        hf = transformers.CLIPModel(transformers.CLIPConfig(**config_to_hf(towers), attn_implementation="sdpa"))
        hf.load_state_dict(state_dict_to_hf(ours.state_dict(), towers), strict=True)  # the same weights
        ours.train()
        hf.train()

        vocab, size = ours.text_backbone.config.vocab_size, ours.backbone.config.img_size
        g = torch.Generator(torch.get_default_device()).manual_seed(0)
        lengths = torch.randint(min(8, context), context + 1, (batch,), generator=g)
        mask = (torch.arange(context) < lengths[:, None]).long()
        ids = torch.randint(0, vocab - 2, (batch, context), generator=g).masked_fill(mask == 0, 0)
        ids[:, 0] = vocab - 2  # start-of-text
        ids[torch.arange(batch), lengths - 1] = vocab - 1  # end-of-text
        images = torch.randn(batch, 3, size, size, generator=g)
        batch_ = {"image": images, "input_ids": ids, "attention_mask": mask}
        return Case(ours, hf, lambda: ours(batch_)["loss"],
                    lambda: hf(input_ids=ids, pixel_values=images, attention_mask=mask, return_loss=True).loss,
                    lambda compiled: lambda: compiled(batch_)["loss"], unit="pairs")  # fmt: skip

    return build


CASES = {
    "b32": ("CLIP B/32 + text 512x12, len 77", clip_case("vit_base_patch32_clip", "clip_text_base", 77, 512)),
    "tiny": ("CLIP tiny towers, len 16", clip_case("vit_clip_test", "clip_text_test", 16, 16)),
}

if __name__ == "__main__":
    benchmark_main(CASES, __file__, __doc__)
