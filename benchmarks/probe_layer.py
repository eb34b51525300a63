"""Choose the block a frozen-encoder probe reads *without the test set*: kNN and linear-probe
accuracy of each candidate block on a validation split carved from the labelled training data.

    python benchmarks/probe_layer.py ENCODER_DIR --preset simmim-swinv2-fmnist --layers 3 5 -1

The probes train on ``--train`` training images (seeded) and are scored on ``--val`` other
training images; the test split is never read. Prints one row per layer; a preset's
``eval.layer`` is then set to the chosen block (and says so in a comment).
"""

import argparse

import torch
from torch.utils.data import Subset

from convergent.backbones.pretrained import from_pretrained
from convergent.commands.presets import preset_config
from convergent.data.registry import build_dataset
from convergent.data.transforms import build_transform
from convergent.evaluation.features import extract_features
from convergent.evaluation.knn import knn_accuracy
from convergent.evaluation.linear_probe import linear_probe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("encoder", help="An encoder directory (save_pretrained) or a run's encoder/.")
    p.add_argument("--preset", required=True, help="The preset whose data and pooling the probes use.")
    p.add_argument("--layers", type=int, nargs="+", required=True, help="Blocks to compare (-1: final tokens).")
    p.add_argument("--pooling", default=None, help="Pooling (default: the preset's eval.pooling).")
    p.add_argument("--train", type=int, default=10_000)
    p.add_argument("--val", type=int, default=5_000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    cfg = preset_config(a.preset)
    data = build_dataset(cfg.data.name, "train", root=cfg.data.root, img_size=cfg.data.img_size,
                         in_chans=cfg.data.in_chans)  # fmt: skip
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(a.seed)).tolist()
    train, val = Subset(data, order[: a.train]), Subset(data, order[a.train : a.train + a.val])
    backbone = from_pretrained(a.encoder).eval()
    transform = build_transform(cfg.data, train=False)
    pooling = a.pooling or cfg.eval.pooling
    print(f"{a.encoder}: {a.train} probe-training / {a.val} validation images of the training split, pooling {pooling}")
    for layer in a.layers:
        xtr, ytr = extract_features(backbone, train, transform, layer=layer, pooling=pooling)
        xva, yva = extract_features(backbone, val, transform, layer=layer, pooling=pooling)
        knn = knn_accuracy(xtr, ytr, xva, yva, k=cfg.eval.knn_k, temperature=cfg.eval.knn_temperature)
        lp = linear_probe(xtr, ytr, xva, yva, len(data.classes), epochs=cfg.eval.probe_epochs, lr=cfg.eval.probe_lr)
        print(f"layer {layer:>3}: kNN {100 * knn:.2f} %  linear probe {100 * lp['acc']:.2f} %", flush=True)


if __name__ == "__main__":
    main()
