"""Backbone train-step throughput (forward + backward + AdamW) against HF transformers.

    python benchmarks/backbones.py                 # both cases, 2 threads, median of 5
    python benchmarks/backbones.py --case swinv2 --reps 3

Cases (BENCHMARKS.md): Swin V2 Tiny at 192 px / window 6, batch 8, vs HF ``Swinv2Model``
(eager attention); ViT-B/16 at 224 px, batch 8, vs HF ``ViTModel`` (SDPA). Both models get
the same weights (converted). "vs HF": HF with the same optimizer (fused AdamW), the
model-side comparison; "vs HF default AdamW": HF with ``torch.optim.AdamW()`` defaults, the
recipe the BENCHMARKS.md peer numbers were taken with. Also prints achieved GFLOP/s against
the measured matmul peak and each model's peak memory (a fresh subprocess per model: the
RSS high-water mark of two train steps above the RSS after building).
"""

import argparse
import gc
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    Result,
    alternate,
    count_flops,
    matmul_peak,
    measure_memory_subprocess,
    current_rss_mb,
    peak_rss_mb,
    reset_peak_rss,
    table,
    train_step,
)


def build_swinv2(batch: int):
    import transformers

    from convergent.backbones import build_backbone
    from convergent.converters import hf_swin

    ours = build_backbone("swinv2_tiny", img_size=192, window_size=6, drop_path=0.0)
    hf = transformers.Swinv2Model(transformers.Swinv2Config(**hf_swin.config_to_hf(ours.config)))
    hf.load_state_dict(hf_swin.state_dict_to_hf(ours.state_dict(), ours.config))
    x = torch.randn(batch, 3, 192, 192)
    return ours, hf, x, (lambda: ours(x).square().mean()), (lambda: hf(pixel_values=x).last_hidden_state.square().mean())


def build_vit(batch: int):
    import transformers

    from convergent.backbones import build_backbone
    from convergent.converters import hf_vit

    ours = build_backbone("vit_base_patch16")
    hf = transformers.ViTModel(transformers.ViTConfig(**hf_vit.config_to_hf(ours.config)), add_pooling_layer=False)
    hf.load_state_dict(hf_vit.state_dict_to_hf(ours.state_dict(), ours.config))
    x = torch.randn(batch, 3, 224, 224)
    return ours, hf, x, (lambda: ours(x).square().mean()), (lambda: hf(pixel_values=x).last_hidden_state.square().mean())


CASES = {"swinv2": ("Swin V2 Tiny 192px w6", build_swinv2), "vit": ("ViT-B/16 224px", build_vit)}


def memory_main(case: str, side: str, batch: int) -> None:
    ours, hf, _, f_ours, f_hf = CASES[case][1](batch)
    model, fwd = (ours, f_ours) if side == "ours" else (hf, f_hf)
    del ours, hf
    step = train_step(model, fwd)
    gc.collect()
    base = current_rss_mb()  # weights, inputs and the interpreter
    reset_peak_rss()
    step()
    step()
    print(json.dumps({"peak_mb": peak_rss_mb() - base}))


def run_case(case: str, args) -> list[list[str]]:
    """Rows for one case. Timed side by side, alternating:
    ours / HF with the same optimizer (fused AdamW): the model-side comparison;
    HF with ``torch.optim.AdamW()`` defaults: the peer recipe of BENCHMARKS.md;
    ours under ``torch.compile`` (``--compile``), compiled before timing."""
    label, build = CASES[case]
    ours, hf, x, f_ours, f_hf = build(args.batch)
    steps = {"ours": train_step(ours, f_ours), "HF": train_step(hf, f_hf)}
    steps["HF, default AdamW"] = train_step(hf, f_hf, fused=False)
    if args.compile:
        compiled = torch.compile(ours, dynamic=False)
        steps["ours, compiled"] = train_step(ours, lambda: compiled(x).square().mean())
        steps["ours, compiled"]()  # compile outside the timing
    flops = count_flops(steps["ours"])
    med = alternate(steps, args.warmup, args.reps)
    res = {k: Result(k, med[k], flops) for k in steps}
    if not args.no_memory:
        for k, side in (("ours", "ours"), ("HF", "hf")):
            res[k].peak_mb = measure_memory_subprocess(__file__, case, side, ["--batch", str(args.batch)])
    hf_time = res["HF"].median_s
    rows = []
    for k, r in res.items():
        mem = f"{r.peak_mb:.0f} MB" if r.peak_mb is not None else ""
        rows.append(
            [
                label,
                k,
                f"{r.rate(args.batch):.2f} img/s",
                f"{hf_time / r.median_s:.2f}x",
                f"{res['HF, default AdamW'].median_s / r.median_s:.2f}x",
                f"{flops / 1e9:.0f}",
                f"{r.gflops():.0f} ({r.gflops() / args.peak:.0%})",
                mem,
            ]
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", choices=sorted(CASES), action="append", help="default: all")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-memory", action="store_true", help="skip the per-model memory subprocesses")
    p.add_argument("--compile", action="store_true", help="also time ours under torch.compile (minutes to compile)")
    p.add_argument("--memory", nargs=2, metavar=("CASE", "SIDE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.memory:
        return memory_main(*args.memory, args.batch)
    args.peak = matmul_peak()
    print(f"torch {torch.__version__}, {args.threads} threads, fp32 matmul peak {args.peak:.0f} GFLOP/s (2048^3)")
    rows = [row for c in (args.case or sorted(CASES, reverse=True)) for row in run_case(c, args)]
    header = ["train step", "run", "throughput", "vs HF", "vs HF default AdamW", "GFLOP/step", "GFLOP/s (of peak)", "peak mem"]
    print(table(rows, header))


if __name__ == "__main__":
    main()
