"""Real result on the full Fashion-MNIST (60k train / 10k test): does SimMIM pre-training help?

    python benchmarks/real_fmnist_simmim.py [--pretrain_steps 1500] [--finetune_steps 800]

1. SimMIM pre-training of the small Swin V2 (default preset) on the 60k training images;
2. kNN and linear-probe accuracy of the frozen pre-trained encoder (all 60k labelled
   training images, 10k test images);
3. fine-tuning with the same budget (steps, schedule, augmentation, seed) from the
   pre-trained encoder and from random initialisation; test accuracy of both.

Needs the Debian package ``dataset-fashion-mnist`` (or ``--root`` with the four idx files);
refuses to run on the bundled subset. Prints a table and writes ``results.json`` in the
output directory. Also run by ``pytest -m slow`` (tests/test_slow_real_data.py) with a
smaller budget.
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from convergent.commands.presets import DEFAULT_PRESET, preset_config
from convergent.config import FinetuneConfig


def run(out: Path, pretrain_steps: int, finetune_steps: int, root: str | None, batch: int) -> dict:
    from convergent.workflows.finetune import run_finetune
    from convergent.workflows.pretrain import run_pretrain

    data = {"root": root, "batch_size": batch}
    pre = preset_config(
        DEFAULT_PRESET,
        {
            "data": data,
            "trainer": {"max_steps": pretrain_steps, "out_dir": str(out), "run_name": "pretrain",
                        "checkpoint_every": max(pretrain_steps // 4, 1), "log_every": 25},
            "eval": {"limit_train": None, "probe_epochs": 30},
        }
    )
    t = time.perf_counter()
    summary = run_pretrain(pre)
    if "bundled subset" in str(summary.get("data")):
        raise SystemExit("this experiment needs the full Fashion-MNIST: apt-get install dataset-fashion-mnist")
    results = {
        "data": summary["data"],
        "pretrain_steps": pretrain_steps,
        "pretrain_wall_s": round(time.perf_counter() - t),
        "pretrain_final_loss": summary["final_loss"],
        "knn_acc": summary.get("knn_acc"),
        "linear_probe_acc": summary.get("linear_probe_acc"),
    }
    for init in ("pretrained", "scratch"):
        cfg = FinetuneConfig()
        cfg.data = dataclasses.replace(pre.data)
        cfg.model = dataclasses.replace(pre.model, init=str(out / "pretrain" / "encoder") if init == "pretrained" else None)
        cfg.optim = dataclasses.replace(cfg.optim, lr=2e-3, warmup_steps=50, layer_decay=0.85, weight_decay=0.05)
        cfg.trainer = dataclasses.replace(pre.trainer, max_steps=finetune_steps, run_name=f"finetune-{init}",
                                          checkpoint_every=max(finetune_steps // 2, 1))
        t = time.perf_counter()
        ft = run_finetune(cfg)
        results[f"finetune_{init}_acc"] = ft["test_acc"]
        results[f"finetune_{init}_wall_s"] = round(time.perf_counter() - t)
    results["finetune_steps"] = finetune_steps
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    return results


def table(r: dict) -> str:
    pct = lambda v: f"{100 * v:.2f} %" if v is not None else "n/a"  # noqa: E731
    rows = [
        ("SimMIM encoder, kNN (k=20, frozen)", pct(r["knn_acc"])),
        ("SimMIM encoder, linear probe (frozen)", pct(r["linear_probe_acc"])),
        (f"fine-tuned {r['finetune_steps']} steps from SimMIM pre-training", pct(r["finetune_pretrained_acc"])),
        (f"fine-tuned {r['finetune_steps']} steps from random init", pct(r["finetune_scratch_acc"])),
    ]
    w = max(len(a) for a, _ in rows)
    lines = [f"{r['data']}; SimMIM pre-training {r['pretrain_steps']} steps ({r['pretrain_wall_s']} s)"]
    lines += [f"| {a.ljust(w)} | {b:>8} |" for a, b in rows]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/real-fmnist", help="Output directory (runs inside it).")
    p.add_argument("--root", default=None, help="Directory with the Fashion-MNIST idx files (default: Debian's).")
    p.add_argument("--pretrain_steps", type=int, default=1500)
    p.add_argument("--finetune_steps", type=int, default=800)
    p.add_argument("--batch_size", type=int, default=128)
    a = p.parse_args()
    out = Path(a.out)
    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out} is not empty; choose another --out")
    run(out, a.pretrain_steps, a.finetune_steps, a.root, a.batch_size)


if __name__ == "__main__":
    main()
