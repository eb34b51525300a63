"""Choose the block a frozen-encoder probe reads *without the test set*: kNN and linear-probe
accuracy of each candidate block on a validation split carved from the labelled training data.

    python benchmarks/probe_layer.py ENCODER_DIR --preset simmim-swinv2-fmnist --layers 3 5 -1
    python benchmarks/probe_layer.py RUN/encoder --preset data2vec-text-wordnet --layers 1 2 -1 --pooling cls avg

Images and texts alike (a text encoder's tokenizer is the one saved with it). The probes train
on ``--train`` training samples (seeded) and are scored on ``--val`` other training samples;
the test split is never read. Prints one row per layer and pooling; a preset's ``eval.layer``
/ ``eval.pooling`` is then set to the choice (and says so in a comment).
"""

import argparse
import dataclasses

import torch
from torch.utils.data import Subset

from convergent.backbones.pretrained import from_pretrained, load_config
from convergent.backbones.registry import model_class
from convergent.commands.presets import preset_config
from convergent.data.registry import build_dataset
from convergent.workflows.evaluate import evaluate_encoder
from convergent.workflows.text import attach_tokenizer, find_tokenizer


class _Part(Subset):
    """Some samples of a dataset that still answers for the dataset's declared attributes
    (``classes``, ``is_text``, ``streamed``, ...) so that the evaluation workflow takes it."""

    def __getattr__(self, name):
        if name in ("dataset", "indices"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("encoder", help="An encoder directory (save_pretrained) or a run's encoder/.")
    p.add_argument("--preset", required=True, help="The preset whose data and probe settings are used.")
    p.add_argument("--layers", type=int, nargs="+", required=True, help="Blocks to compare (-1: final tokens).")
    p.add_argument("--pooling", nargs="+", default=None, help="Poolings to compare (default: the preset's).")
    p.add_argument("--train", type=int, default=10_000)
    p.add_argument("--val", type=int, default=5_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--random", action="store_true", help="Probe the encoder's architecture with random weights.")
    a = p.parse_args()
    cfg = preset_config(a.preset)
    data = build_dataset(cfg.data.name, "train", root=cfg.data.root, img_size=cfg.data.img_size,
                         in_chans=cfg.data.in_chans)  # fmt: skip
    tokenizer = find_tokenizer(cfg, encoder_dir=a.encoder) if data.is_text else None
    attach_tokenizer(tokenizer, cfg.data.max_length, data)
    if a.train + a.val > len(data):
        raise SystemExit(f"--train {a.train} + --val {a.val} exceed the {len(data)} training samples")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(a.seed)).tolist()
    train, val = _Part(data, order[: a.train]), _Part(data, order[a.train : a.train + a.val])
    if a.random:
        torch.manual_seed(a.seed)
        backbone = model_class(load_config(a.encoder))(load_config(a.encoder)).eval()
    else:
        backbone = from_pretrained(a.encoder).eval()
    print(f"{a.encoder}{' (random weights)' if a.random else ''}: {a.train} probe-training / {a.val} validation samples of the training split")
    for pooling in a.pooling or [cfg.eval.pooling]:
        for layer in a.layers:
            c = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, layer=layer, pooling=pooling,
                                                                  limit_train=None))  # fmt: skip
            r = evaluate_encoder(c, backbone, train, val, tokenizer, names=["knn", "linear-probe"])
            print(f"pooling {pooling:>7} layer {layer:>3}: kNN {100 * r['knn_acc']:.2f} %  "
                  f"linear probe {100 * r['linear_probe_acc']:.2f} %", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
