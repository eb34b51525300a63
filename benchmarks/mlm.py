"""BERT masked-language-modelling train-step throughput (forward + backward + AdamW) against
HF transformers.

    python benchmarks/mlm.py                          # BERT-base, seq 128, batch 8, median of 5
    python benchmarks/mlm.py --case tiny --reps 2 --no-memory   # a smoke test in seconds

Cases:
* ``base`` (BENCHMARKS.md): BERT-base (768 x 12, vocab 30522), seq 128, batch 8: our ``mlm``
  task vs HF ``BertForMaskedLM`` (SDPA), the same weights (converted), the same corrupted ids
  and labels (15 % chosen, 80/10/10), both in train mode (dropout 0.1);
* ``tiny``: BERT-tiny (128 x 2), seq 32, the same recipe, for a quick check of the script.
Both sides use fused AdamW ("vs HF"); "vs HF default AdamW" times HF with ``torch.optim.AdamW()``
defaults. Throughput counts tokens (batch x seq). Our LM head runs on the chosen tokens only,
HF's on every token, so the two sides' FLOPs differ (each is counted on its own).
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Case, benchmark_main  # noqa: E402

MASK_ID, CLS_ID, SEP_ID = 103, 101, 102  # the BERT uncased vocabulary


def mlm_case(variant: str, seq: int):
    def build(batch: int) -> Case:
        import transformers

        from convergent.backbones import build_backbone
        from convergent.converters.hf_bert import config_to_hf, lm_head_to_hf, state_dict_to_hf
        from convergent.masking import token_masking
        from convergent.tasks.configs import MLMConfig
        from convergent.tasks.mlm import MLM, corrupt_tokens

        backbone = build_backbone(variant, mask_token_id=MASK_ID)
        cfg = backbone.config
        ours = MLM(backbone, MLMConfig())
        hf = transformers.BertForMaskedLM(transformers.BertConfig(**config_to_hf(cfg), attn_implementation="sdpa"))
        sd = {f"bert.{k}": v for k, v in state_dict_to_hf(backbone.state_dict(), cfg).items()}
        sd |= lm_head_to_hf(ours.head.state_dict(), backbone.word_embed.weight)
        hf.load_state_dict(sd, strict=True)  # the same weights on both sides
        hf.train()

        ids = torch.randint(1000, cfg.vocab_size, (batch, seq))
        ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
        am = torch.ones_like(ids)
        chosen = token_masking(torch.ones_like(ids, dtype=torch.bool).index_fill(1, torch.tensor([0, seq - 1]), False))
        ids, labels = corrupt_tokens(ids, chosen, MASK_ID, cfg.vocab_size)
        batch_ = {"input_ids": ids, "attention_mask": am, "labels": labels}
        return Case(ours, hf, lambda: ours(batch_)["loss"],
                    lambda: hf(input_ids=ids, attention_mask=am, labels=labels).loss,
                    lambda compiled: lambda: compiled(batch_)["loss"],
                    unit="tokens", items_per_sample=seq)  # fmt: skip

    return build


CASES = {
    "base": ("BERT-base MLM seq 128", mlm_case("bert_base", 128)),
    "tiny": ("BERT-tiny MLM seq 32", mlm_case("bert_tiny", 32)),
}

if __name__ == "__main__":
    benchmark_main(CASES, __file__, __doc__)
