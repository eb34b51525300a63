"""Real result on the full Fashion-MNIST (60k train / 10k test): the image objectives side by
side at one budget, judged by frozen-encoder kNN and linear-probe accuracy.

    python benchmarks/real_fmnist_compare.py [--steps 400] [--methods simmim mocov3 ...]
    python benchmarks/real_fmnist_compare.py --accelerator cuda --precision bf16-mixed   # on a GPU

Each method is its preset (``convergent pretrain --preset NAME``) with the same number of
pre-training steps and batch size; then kNN (k=20) and a linear probe (30 epochs) of the frozen
encoder on all 60k labelled training images, tested on the 10k test images. The floors are the
same probes of randomly initialised encoders of both backbones (``random-vit``, ``random-swin``).

Needs the Debian package ``dataset-fashion-mnist`` (or ``--root`` with the four idx files);
refuses to run on the bundled subset. Results are written to ``results.json`` in the output
directory after each method; a rerun with the same ``--out`` skips the methods already there.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from convergent.commands.presets import preset_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_language import random_probe  # noqa: E402

METHODS = {  # name: (preset, pre-train?)
    "simmim": ("simmim-swinv2-fmnist", True),
    "mae": ("mae-vit-fmnist", True),
    "data2vec": ("data2vec-vit-fmnist", True),
    "mocov3": ("mocov3-vit-fmnist", True),
    "random-vit": ("data2vec-vit-fmnist", False),
    "random-swin": ("simmim-swinv2-fmnist", False),
}


def run_method(name: str, out: Path, a) -> dict:
    from convergent.workflows.pretrain import run_pretrain

    preset, pretrain = METHODS[name]
    cfg = preset_config(preset, {
        "data": {"root": a.root, "batch_size": a.batch_size},
        "trainer": {"max_steps": a.steps, "out_dir": str(out), "run_name": name, "accelerator": a.accelerator,
                    "precision": a.precision, "checkpoint_every": max(a.steps // 2, 1), "log_every": 50},
        "eval": {"limit_train": None, "probe_epochs": 30},
    })  # fmt: skip
    t = time.perf_counter()
    if pretrain:
        s = run_pretrain(cfg)
        r = {"final_loss": s["final_loss"], "knn_acc": s["knn_acc"], "linear_probe_acc": s["linear_probe_acc"],
             "data": s["data"]}  # fmt: skip
    else:
        r = random_probe(cfg)
        r = {"knn_acc": r["knn_acc"], "linear_probe_acc": r["linear_probe_acc"]}
    return {**r, "backbone": cfg.model.backbone, "preset": preset, "wall_s": round(time.perf_counter() - t)}


def check_full_data(root: str | None) -> None:
    """Refuse the bundled subset before any method runs (the random floors report no data)."""
    from convergent.data.registry import build_dataset

    if "bundled subset" in build_dataset("fashion-mnist", "test", root=root).source:
        raise SystemExit("this experiment needs the full Fashion-MNIST: apt-get install dataset-fashion-mnist")


def table(results: dict, steps: int) -> str:
    pct = lambda v: f"{100 * v:.2f} %" if v is not None else "n/a"  # noqa: E731
    rows = [
        (n, r["backbone"], str(steps) if METHODS[n][1] else "0", pct(r["knn_acc"]), pct(r["linear_probe_acc"]), f"{r['wall_s']} s")
        for n, r in results.items()
    ]  # fmt: skip
    head = ("method", "backbone", "steps", "kNN (k=20)", "linear probe", "wall")
    w = [max(len(x[i]) for x in rows + [head]) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(c.ljust(k) for c, k in zip(r, w)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (k + 2) for k in w) + "|"] + [line(r) for r in rows])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/real-fmnist-compare", help="Output directory (runs inside it).")
    p.add_argument("--root", default=None, help="Directory with the Fashion-MNIST idx files (default: Debian's).")
    p.add_argument("--steps", type=int, default=400, help="Pre-training steps of every method.")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--precision", default="32-true", help="e.g. bf16-mixed on a GPU")
    a = p.parse_args()
    check_full_data(a.root)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    if saved and saved.get("steps") != a.steps:
        sys.exit(f"{path} holds results for {saved.get('steps')} steps, not {a.steps}; choose another --out")
    results = saved.get("methods", {})
    for name in a.methods:
        if name not in results:
            results[name] = run_method(name, out, a)
            path.write_text(json.dumps({"steps": a.steps, "precision": a.precision, "methods": results}, indent=2) + "\n")
    print(table({n: results[n] for n in a.methods}, a.steps))


if __name__ == "__main__":
    main()
