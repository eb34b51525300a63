"""Real result on WordNet 3.0: MLM vs data2vec pre-training of a small text Transformer,
judged by part-of-speech classification of held-out definitions. (data2vec on images is in
``real_fmnist_compare.py``, beside the other image objectives.)

    python benchmarks/real_language.py [--pretrain_steps 600] [--finetune_steps 300]

1. one WordPiece tokenizer trained on the WordNet glosses' training split (shared by every
   run, so the from-scratch baseline sees the same vocabulary);
2. ``mlm-bert-wordnet`` and ``data2vec-text-wordnet`` pre-training of BERT "mini" on the
   glosses' training split (definitions + examples); masked-token accuracy and perplexity on
   the validation split (MLM);
3. part of speech (noun / verb / adjective / adverb) of a WordNet *definition*: kNN and
   linear probe of each frozen encoder and of a random one, then fine-tuning with the same
   budget from MLM, from data2vec and from random initialisation; test-split accuracy. The
   split is by synset and deduplicated, so no test definition was seen in pre-training.

Needs the Debian package ``wordnet-base``; refuses to run on the bundled subset. Prints a table and writes ``results.json`` in the output directory.
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from convergent.commands.presets import preset_config
from convergent.config import FinetuneConfig


def train_shared_tokenizer(out: Path, vocab_size: int) -> Path:
    from convergent.data.registry import build_dataset
    from convergent.data.tokenizer import train_tokenizer

    glosses = build_dataset("wordnet-glosses", "train")
    if "bundled" in glosses.source:
        raise SystemExit("this experiment needs WordNet: apt-get install wordnet-base")
    train_tokenizer(glosses.texts(), kind="wordpiece", vocab_size=vocab_size).save(out / "tokenizer")
    return out / "tokenizer"


def random_probe(cfg) -> dict:
    """kNN / linear probe of a randomly initialised encoder (a floor for the probes)."""
    import torch

    from convergent.workflows.assemble import build_datasets, build_encoder
    from convergent.workflows.evaluate import evaluate_encoder
    from convergent.workflows.text import prepare_text

    torch.manual_seed(cfg.trainer.seed)
    train_set, test_set = build_datasets(cfg)
    tokenizer = prepare_text(cfg, None, train_set, test_set)
    return evaluate_encoder(cfg, build_encoder(cfg, tokenizer), train_set, test_set, tokenizer)


def probe(cfg, encoder: Path) -> dict:
    from convergent.workflows.evaluate import run_eval

    return run_eval(cfg, encoder)


def text_part(out: Path, a) -> dict:
    from convergent.workflows.finetune import run_finetune
    from convergent.workflows.pretrain import run_pretrain

    tok = str(train_shared_tokenizer(out, a.vocab_size))
    results: dict = {"pretrain_steps": a.pretrain_steps, "finetune_steps": a.finetune_steps}
    for name, preset in (("mlm", "mlm-bert-wordnet"), ("data2vec", "data2vec-text-wordnet")):
        cfg = preset_config(preset, {
            "data": {"tokenizer": tok},
            "trainer": {"max_steps": a.pretrain_steps, "out_dir": str(out), "run_name": name,
                        "checkpoint_every": max(a.pretrain_steps // 4, 1), "log_every": 25},
        })  # fmt: skip
        t = time.perf_counter()
        s = run_pretrain(cfg)
        results[f"{name}_pretrain_wall_s"] = round(time.perf_counter() - t)
        results[f"{name}_final_loss"] = s["final_loss"]
        for k in ("val_masked_token_accuracy", "val_perplexity"):
            if k in s:
                results[f"{name}_{k}"] = s[k]
    # part of speech of held-out definitions
    defs = preset_config("mlm-bert-wordnet", {
        "data": {"name": "wordnet-definitions", "tokenizer": tok},
        "eval": {"limit_train": None, "probe_epochs": 30},
    })  # fmt: skip
    results["data"] = "WordNet 3.0 definitions (part of speech), test split"
    for name in ("mlm", "data2vec"):
        r = probe(defs, out / name / "encoder")
        results[f"{name}_knn_acc"], results[f"{name}_linear_probe_acc"] = r["knn_acc"], r["linear_probe_acc"]
    r = random_probe(defs)
    results["random_knn_acc"], results["random_linear_probe_acc"] = r["knn_acc"], r["linear_probe_acc"]
    for init in ("mlm", "data2vec", "scratch"):
        cfg = FinetuneConfig()
        cfg.data = dataclasses.replace(defs.data)
        cfg.model = dataclasses.replace(defs.model, init=None if init == "scratch" else str(out / init / "encoder"))
        cfg.optim = dataclasses.replace(cfg.optim, lr=5e-4, warmup_steps=30, weight_decay=0.01, layer_decay=1.0)
        cfg.classify = dataclasses.replace(cfg.classify, pooling="avg")
        cfg.trainer = dataclasses.replace(defs.trainer, max_steps=a.finetune_steps, out_dir=str(out),
                                          run_name=f"finetune-{init}", checkpoint_every=a.finetune_steps)  # fmt: skip
        t = time.perf_counter()
        results[f"finetune_{init}_acc"] = run_finetune(cfg)["test_acc"]
        results[f"finetune_{init}_wall_s"] = round(time.perf_counter() - t)
    return results


def table(r: dict) -> str:
    pct = lambda v: f"{100 * v:.2f} %" if v is not None else "n/a"  # noqa: E731
    rows = [
        ("kNN (k=20), frozen: MLM / data2vec / random", " / ".join(pct(r[f"{n}_knn_acc"]) for n in ("mlm", "data2vec", "random"))),
        ("linear probe, frozen: MLM / data2vec / random",
         " / ".join(pct(r[f"{n}_linear_probe_acc"]) for n in ("mlm", "data2vec", "random"))),
        (f"fine-tuned {r['finetune_steps']} steps: from MLM / data2vec / scratch",
         " / ".join(pct(r[f"finetune_{n}_acc"]) for n in ("mlm", "data2vec", "scratch"))),
        ("MLM validation masked-token accuracy / perplexity",
         f"{pct(r.get('mlm_val_masked_token_accuracy'))} / {r.get('mlm_val_perplexity', float('nan')):.1f}"),
    ]  # fmt: skip
    w = max(len(a) for a, _ in rows)
    head = f"{r['data']}; pre-training {r['pretrain_steps']} steps (MLM {r['mlm_pretrain_wall_s']} s, data2vec {r['data2vec_pretrain_wall_s']} s)"
    return "\n".join([head] + [f"| {a.ljust(w)} | {b} |" for a, b in rows])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/real-language", help="Output directory (runs inside it).")
    p.add_argument("--pretrain_steps", type=int, default=600)
    p.add_argument("--finetune_steps", type=int, default=300)
    p.add_argument("--vocab_size", type=int, default=8192)
    a = p.parse_args()
    out = Path(a.out)
    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out} is not empty; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    results = text_part(out, a)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
