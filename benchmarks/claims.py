"""The claims suite: the seeds' claims, each measured at small scale on real data, with a
verdict *holds* / *does not hold at this scale*.

    python benchmarks/claims.py [--out runs/claims] [--claims mim-finetune ...]
    python benchmarks/claims.py --accelerator cuda --precision bf16-mixed      # on a GPU
    python benchmarks/claims.py --list                                          # what it would run

Every experiment is a preset at its default budget (``convergent pretrain --preset NAME``,
seed 0), the same probes of that preset's backbone with random weights (the floor), or a
fine-tuning with one fixed budget (:class:`claims_runs.Settings`) on 1 % or 10 % of the labels.
Data (``../shared/DATA.md``): the full Fashion-MNIST (probes: kNN k = 20 and a linear probe
on 10,000 labelled training images, tested on all 10,000 test images), WordNet 3.0 glosses
(part of speech of held-out glosses) and the emoji pairs of the npm package (zero-shot
category and retrieval on the held-out emoji). The bundled subsets are refused.

Results: ``OUT/results.json`` (each experiment, saved as it finishes; a rerun skips finished
ones, so a killed suite resumes), ``OUT/claims.json`` and ``OUT/claims.md`` (numbers and
verdicts), ``OUT/<claim>.png`` (one plot per claim).

A difference counts when it exceeds twice its standard error (two independent binomial
accuracies on the test set, ``sqrt(p1 q1 / n + p2 q2 / n)``); a claim holds when every
comparison it makes counts in the claimed direction.
"""

import argparse
import datetime
import json
import math
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from claims_runs import (  # noqa: E402
    AVGDIST,
    AVGDIST_FRACTION,
    BEIT_FRACTIONS,
    EXPERIMENTS,
    FD_TEACHERS,
    FRACTIONS,
    JUDGE,
    MIM_BASELINE,
    PRETRAIN,
    SIZE_FRACTIONS,
    SIZE_VARIANTS,
    Settings,
    avgdist_name,
    fd_name,
    run_experiment,
)


@dataclass
class Comparison:
    """``a`` beats ``b`` (or exceeds a chance level) — one row of a claim's table."""

    label: str
    a: float
    b: float
    n: int | None = None
    """Test samples behind the accuracies (None: no noise estimate, e.g. a chance level)."""
    factor: float = 1.0
    """``a`` must exceed ``factor · b`` (retrieval: ten times chance)."""
    se: float | None = None
    """The standard error of ``a - b`` when ``a`` and ``b`` are not two accuracies (e.g. two gains)."""
    unit: str = "%"
    """'%': accuracies shown in percent; 'dB': decibels; '': plain numbers (losses, correlations)."""

    def show(self, v: float) -> str:
        return {"%": f"{100 * v:.2f} %", "dB": f"{v:.2f} dB"}.get(self.unit, f"{v:.4f}")

    def show_diff(self, v: float) -> str:
        """A difference (or margin) of two values in this unit."""
        return {"%": f"{100 * v:+.2f} pts", "dB": f"{v:+.2f} dB"}.get(self.unit, f"{v:+.4f}")

    @property
    def margin(self) -> float:
        """Twice the standard error of ``a - b`` (0 without ``n`` or ``se``)."""
        if self.se is not None:
            return 2 * self.se
        if not self.n:
            return 0.0
        return 2 * math.sqrt(self.a * (1 - self.a) / self.n + self.b * (1 - self.b) / self.n)

    @property
    def holds(self) -> bool:
        return self.a - self.factor * self.b > self.margin


@dataclass
class Verdict:
    comparisons: list[Comparison]
    note: str = ""
    extra: dict = field(default_factory=dict)
    """Sub-claims (name -> holds), reported under the table."""
    data: dict = field(default_factory=dict)
    """Numbers behind a claim's plot (saved in claims.json), e.g. the AvgDist points."""

    @property
    def holds(self) -> bool:
        return bool(self.comparisons) and all(c.holds for c in self.comparisons)


@dataclass(frozen=True)
class Claim:
    name: str
    statement: str
    needs: tuple[str, ...]
    judge: Callable[[dict], Verdict]


def _acc(r: dict, name: str, key: str) -> float:
    return r[name][key]


def _n(r: dict, name: str) -> int:
    return r[name]["n_test"]


def _ft(name: str, f: float) -> str:
    return f"finetune:{name}:{f:g}"


def judge_mim_finetune(r: dict) -> Verdict:
    rows, gains = [], {}
    for m in ("simmim", "mae"):
        for f in FRACTIONS:
            a, b = _acc(r, _ft(m, f), "test_acc"), _acc(r, _ft(f"random:{m}", f), "test_acc")
            rows.append(Comparison(f"{m} vs random {r[_ft(m, f)]['backbone']}, fine-tuned on {f:.0%} of labels",
                                   a, b, _n(r, _ft(m, f))))  # fmt: skip
            gains[(m, f)] = a - b
    lo, hi = min(FRACTIONS), max(FRACTIONS)
    most = {m: gains[(m, lo)] > gains[(m, hi)] for m in ("simmim", "mae")}
    note = "; ".join(f"{m}: gain {100 * gains[(m, lo)]:+.2f} pts at {lo:.0%} vs {100 * gains[(m, hi)]:+.2f} at "
                     f"{hi:.0%} ({'larger' if most[m] else 'not larger'} with fewer labels)" for m in most)  # fmt: skip
    return Verdict(rows, note, {"helps_most_with_few_labels": all(most.values())})


def probe_rows(r: dict, names: tuple[str, ...]) -> list[Comparison]:
    """kNN and linear probe of each pre-trained encoder in ``names`` against its random floor."""
    rows = []
    for name in names:
        for key, label in (("knn_acc", "kNN"), ("linear_probe_acc", "linear probe")):
            rows.append(Comparison(f"{name} vs random {r[name]['backbone']}, {label}", _acc(r, name, key),
                                   _acc(r, f"random:{name}", key), _n(r, name)))  # fmt: skip
    return rows


def judge_data2vec(r: dict) -> Verdict:
    return Verdict(probe_rows(r, ("data2vec-image", "data2vec-text")))


def judge_contrastive_vs_mim(r: dict) -> Verdict:
    rows = []
    for c in ("mocov3", "simclr"):
        rows.append(Comparison(f"linear probe: {c} vs mae", _acc(r, c, "linear_probe_acc"),
                               _acc(r, "mae", "linear_probe_acc"), _n(r, c)))  # fmt: skip
    f = max(FRACTIONS)
    for c in ("mocov3", "simclr"):
        rows.append(Comparison(f"fine-tuned on {f:.0%}: mae vs {c}", _acc(r, _ft("mae", f), "test_acc"),
                               _acc(r, _ft(c, f), "test_acc"), _n(r, _ft(c, f))))  # fmt: skip
    note = ("all on vit_micro; SimMIM (Swin V2) is not in the paired comparison because its backbone differs: "
            f"linear probe {100 * r['simmim']['linear_probe_acc']:.2f} %, fine-tuned on {f:.0%} "
            f"{100 * r[_ft('simmim', f)]['test_acc']:.2f} %")  # fmt: skip
    return Verdict(rows, note)


def judge_text(r: dict) -> Verdict:
    return Verdict(probe_rows(r, ("mlm", "simcse")))


def _var(p: float, n: int) -> float:
    return p * (1 - p) / n


def judge_model_size(r: dict) -> Verdict:
    """The fine-tuning gain of SimMIM over random init is larger for the larger Swin V2."""
    small, large = SIZE_VARIANTS
    rows = []
    for f in SIZE_FRACTIONS:
        accs = {m: (_acc(r, _ft(m, f), "test_acc"), _acc(r, _ft(f"random:{m}", f), "test_acc")) for m in SIZE_VARIANTS}
        n = _n(r, _ft(small, f))
        gains = {m: a - b for m, (a, b) in accs.items()}
        se = math.sqrt(sum(_var(x, n) for pair in accs.values() for x in pair))
        rows.append(Comparison(f"fine-tuned on {f:.0%}: SimMIM's gain on {large} vs on {small}", gains[large],
                               gains[small], n, se=se))  # fmt: skip
    note = ("encoders: the scaling sweep's runs on all of its data at its largest budget; " + "; ".join(
        f"{m}: fine-tuned " + ", ".join(
            f"{100 * _acc(r, _ft(m, f), 'test_acc'):.2f} % vs random {100 * _acc(r, _ft(f'random:{m}', f), 'test_acc'):.2f} "
            f"% at {f:.0%}" for f in SIZE_FRACTIONS) for m in SIZE_VARIANTS))  # fmt: skip
    return Verdict(rows, note)


def _budgets(points: list[dict], variant: str, fraction: float) -> list[dict]:
    return sorted((p for p in points if p["variant"] == variant and p["fraction"] == fraction), key=lambda p: p["steps"])


def judge_scaling_overfit(r: dict) -> Verdict:
    """The largest model's held-out loss rises from the first to the last step budget on the
    smallest data fraction, and falls on the largest (Xie et al. 2023, Fig. / Table: SwinV2-B on
    10 % vs 100 % of ImageNet-1K)."""
    points = r["scaling"]["points"]
    largest = max(points, key=lambda p: p["params"])["variant"]
    fractions = sorted({p["fraction"] for p in points})
    small, full = _budgets(points, largest, fractions[0]), _budgets(points, largest, fractions[-1])
    rows = [Comparison(f"{largest} on {fractions[0]:.0%} of the data: held-out loss at {small[-1]['steps']} steps vs "
                       f"{small[0]['steps']} (rises)", small[-1]["val_loss"], small[0]["val_loss"], unit=""),
            Comparison(f"{largest} on {fractions[-1]:.0%} of the data: held-out loss at {full[0]['steps']} steps vs "
                       f"{full[-1]['steps']} (falls)", full[0]["val_loss"], full[-1]["val_loss"], unit="")]  # fmt: skip
    curves = "; ".join(f"{v} at {f:.0%}: " + " → ".join(f"{p['val_loss']:.4f}" for p in _budgets(points, v, f))
                       for v in sorted({p["variant"] for p in points}) for f in (fractions[0], fractions[-1]))  # fmt: skip
    return Verdict(rows, f"held-out loss (fixed masks) by step budget: {curves}")


def judge_scaling_predicts(r: dict, permutations: int = 10_000) -> Verdict:
    """Held-out loss predicts the downstream score across the sweep's points: Spearman's rho
    below zero beyond the 95th percentile of rho under random pairings (a one-sided permutation
    test, seeded)."""
    import numpy as np

    from convergent.evaluation.scaling import spearman

    points = [p for p in r["scaling"]["points"] if p.get("score") is not None and p.get("val_loss") is not None]
    loss, score = [p["val_loss"] for p in points], [p["score"] for p in points]
    rho = spearman(loss, score)
    rng = np.random.default_rng(0)
    null = [-spearman(loss, list(rng.permutation(score))) for _ in range(permutations)]
    crit = float(np.quantile(null, 0.95))
    name = points[0].get("score_name", "downstream score") if points else "downstream score"
    row = Comparison(f"−Spearman ρ(held-out loss, {name}) over {len(points)} points vs the 95th percentile of "
                     f"random pairings", -rho, crit, unit="")  # fmt: skip
    return Verdict([row], f"ρ = {rho:.3f}: lower held-out loss goes with a higher {name}" if rho < 0 else
                   f"ρ = {rho:.3f}")  # fmt: skip


def judge_fd(r: dict) -> Verdict:
    """The FD student of the preset's contrastive teacher fine-tunes better than the teacher
    itself, at both label fractions; the other teacher is reported as a sub-claim."""

    def rows(teacher: str) -> list[Comparison]:
        return [Comparison(f"fine-tuned on {f:.0%}: FD student ({teacher} teacher) vs the {teacher} teacher itself",
                           _acc(r, _ft(fd_name(teacher), f), "test_acc"), _acc(r, _ft(teacher, f), "test_acc"),
                           _n(r, _ft(teacher, f))) for f in FRACTIONS]  # fmt: skip

    main, *others = FD_TEACHERS
    student = r[fd_name(main)]
    note = (f"student `{student['preset']}` ({student['backbone']}, kNN {pct(student['knn_acc'])}, linear probe "
            f"{pct(student['linear_probe_acc'])}); teachers: " + ", ".join(
                f"{t} ({r[t]['backbone']}, kNN {pct(r[t]['knn_acc'])}, linear probe {pct(r[t]['linear_probe_acc'])})"
                for t in FD_TEACHERS) + "; the same fine-tuning budget for all. " + "; ".join(
                f"with the {t} teacher: " + ", ".join(f"{x.label.split(':')[0]} {pct(x.a)} vs {pct(x.b)}" for x in rows(t))
                for t in others))  # fmt: skip
    extra = {f"with a {t} teacher": all(x.holds for x in rows(t)) for t in others}
    return Verdict(rows(main), note, extra)


def avgdist_of(patch: int, ratio: float, img_size: int = 32, model_patch: int = 4, samples: int = 256) -> float:
    """Mean AvgDist (px) of SimMIM masks of one strategy (seed 0), as ``convergent masks`` prints it."""
    import torch

    from convergent.masking import SimMIMMaskGenerator, avg_dist, mask_to_pixels

    masks = SimMIMMaskGenerator(img_size, patch, model_patch, ratio)(samples, generator=torch.Generator().manual_seed(0))
    return avg_dist(mask_to_pixels(masks, img_size // model_patch, model_patch)).mean().item()


def judge_avgdist(r: dict, dists: dict | None = None) -> Verdict:
    """The best fine-tuned strategy lies strictly inside the AvgDist range and beats the strategies
    at both ends (lowest and highest AvgDist) by more than 2 SE."""
    dists = dists or {s: avgdist_of(*s) for s in AVGDIST}
    acc = {s: _acc(r, _ft(avgdist_name(*s), AVGDIST_FRACTION), "test_acc") for s in AVGDIST}
    n = _n(r, _ft(avgdist_name(*AVGDIST[0]), AVGDIST_FRACTION))
    by_dist = sorted(AVGDIST, key=lambda s: dists[s])
    best = max(AVGDIST, key=lambda s: acc[s])
    rows = []
    for end in (by_dist[0], by_dist[-1]):
        rows.append(Comparison(f"best ({best[0]}-px, {best[1]:.0%}, AvgDist {dists[best]:.2f}) vs "
                               f"{'lowest' if end == by_dist[0] else 'highest'} AvgDist ({end[0]}-px, {end[1]:.0%}, "
                               f"AvgDist {dists[end]:.2f})", acc[best], acc[end], n))  # fmt: skip
    table = ", ".join(f"AvgDist {dists[s]:.2f} ({s[0]}-px, {s[1]:.0%}): {100 * acc[s]:.2f} %" for s in by_dist)
    note = f"fine-tuned on {AVGDIST_FRACTION:.0%} of the labels, sorted by AvgDist: {table}"
    points = {"points": [{"patch": s[0], "ratio": s[1], "avg_dist": dists[s], "finetune_acc": acc[s]} for s in by_dist]}
    return Verdict(rows, note, data=points)  # a best strategy at an end is compared with itself: does not count


def judge_image_text(r: dict) -> Verdict:
    rows = []
    for name in ("clip", "siglip"):
        x = r[name]
        rows.append(Comparison(f"{name}: zero-shot category top-1 vs chance", x["zero_shot_acc"], x["chance"],
                               x["num_images"]))  # fmt: skip
        for d in ("i2t", "t2i"):
            rows.append(Comparison(f"{name}: {d} R@1 vs 10 x chance", x[f"{d}_R@1"], x[f"chance_{d}_R@1"], factor=10))
    return Verdict(rows, "chance levels are exact (1 / classes; the expected recall of a random ranking)")


def judge_vq_tokenizer(r: dict) -> Verdict:
    rows = [Comparison(f"{name} (`{r[name]['preset']}`): held-out PSNR vs the same bits without learning",
                       r[name]["psnr"], r[name]["baseline_psnr"], se=r[name]["psnr_gain_se"], unit="dB")
            for name in ("vqvae", "vqvae-fmnist")]  # fmt: skip
    note = ("the same bits without learning: each image averaged to the token grid, each cell's colour rounded to "
            "log2(codes) bits, resized back; " + "; ".join(
                f"{n}: {r[n]['reconstruction_images']} held-out images, codebook usage {pct(r[n]['codebook_usage'])}, "
                f"code perplexity {r[n]['code_perplexity']:.0f}" for n in ("vqvae", "vqvae-fmnist")))  # fmt: skip
    return Verdict(rows, note)


def judge_beit(r: dict) -> Verdict:
    rows = probe_rows(r, ("beit",))
    for f in BEIT_FRACTIONS:
        rows.append(Comparison(f"beit vs random {r['beit']['backbone']}, fine-tuned on {f:.0%} of labels",
                               _acc(r, _ft("beit", f), "test_acc"), _acc(r, _ft("random:beit", f), "test_acc"),
                               _n(r, _ft("beit", f))))  # fmt: skip
    versus = [Comparison(f"{label}: beit vs simmim", _acc(r, "beit", key), _acc(r, MIM_BASELINE, key), _n(r, "beit"))
              for key, label in (("knn_acc", "kNN"), ("linear_probe_acc", "linear probe"))]  # fmt: skip
    versus += [Comparison(f"fine-tuned on {f:.0%}: beit vs simmim", _acc(r, _ft("beit", f), "test_acc"),
                          _acc(r, _ft(MIM_BASELINE, f), "test_acc"), _n(r, _ft("beit", f))) for f in BEIT_FRACTIONS]
    note = (f"against SimMIM (pixel regression) on the same {r[MIM_BASELINE]['backbone']} at the same budget "
            f"({r['beit']['steps']} x {r['beit']['batch_size']}): " + ", ".join(
                f"{x.label.split(':')[0]} {pct(x.a)} vs {pct(x.b)}" for x in versus))  # fmt: skip
    return Verdict(rows, note, {"beats SimMIM at the same budget": all(x.holds for x in versus)})


def judge_text_to_image(r: dict) -> Verdict:
    x = r["dalle"]
    row = Comparison(f"R-precision of images drawn for {x['num_images']} held-out captions (judge: the suite's "
                     f"{JUDGE} run, among {x['candidates']} captions) vs chance", x["r_precision"], x["chance"],
                     x["num_images"])  # fmt: skip
    return Verdict([row], "samples: the whole codebook at temperature 1 (no top-k, no re-ranking); "
                   "picture: runs/dalle/heldout-samples.png")  # fmt: skip


def judge_captioning(r: dict) -> Verdict:
    x = r["caption"]
    rows = [Comparison("CIDEr-D: the captioner vs the nearest training image's caption", x["cider"], x["nn_cider"],
                       se=x["cider_gain_se"], unit=""),
            Comparison("BLEU-4 (0-100): the captioner vs the nearest training image's caption", x["bleu4"],
                       x["nn_bleu4"], unit="")]  # fmt: skip
    examples = "; ".join(x.get("caption_examples", []))
    return Verdict(rows, f"{x['captioned_images']} held-out emoji, beam search; CIDEr-D's standard error from the "
                   f"per-image gains (paired); BLEU-4 is corpus-level (no noise estimate); examples: {examples}; "
                   "picture: runs/caption/heldout-captions.png")  # fmt: skip


CLAIMS = [
    Claim("mim-finetune", "Masked image modelling (SimMIM, MAE) improves fine-tuning over random initialisation at an "
          "equal fine-tuning budget, and helps most when labels are few (1 % and 10 % of the labels)",
          tuple(_ft(p, f) for m in ("simmim", "mae") for p in (m, f"random:{m}") for f in FRACTIONS),
          judge_mim_finetune),
    Claim("data2vec", "One data2vec objective improves both an image and a text encoder over random initialisation "
          "(frozen kNN and linear probe)",
          ("data2vec-image", "random:data2vec-image", "data2vec-text", "random:data2vec-text"), judge_data2vec),
    Claim("contrastive-vs-mim", "Contrastive encoders (MoCo v3, SimCLR) have the better linear probe, masked-modelling "
          "encoders (MAE) the better fine-tuning",
          ("mae", "mocov3", "simclr", "simmim", *(_ft(m, max(FRACTIONS)) for m in ("mae", "mocov3", "simclr", "simmim"))),
          judge_contrastive_vs_mim),
    Claim("text", "MLM and SimCSE text encoders beat a random encoder on a held-out text task (part of speech of "
          "WordNet glosses)", ("mlm", "random:mlm", "simcse", "random:simcse"), judge_text),
    Claim("image-text", "CLIP and SigLIP: zero-shot classification and retrieval far above chance on held-out pairs",
          ("clip", "siglip"), judge_image_text),
    Claim("model-size", "The larger model benefits more from masked image modelling (SimMIM's fine-tuning gain over "
          "random initialisation, Swin V2 5.5 M vs 2.2 M parameters, pre-trained alike in the scaling sweep)",
          tuple(_ft(p, f) for m in SIZE_VARIANTS for p in (m, f"random:{m}") for f in SIZE_FRACTIONS),
          judge_model_size),
    Claim("scaling-overfit", "On a small data fraction the larger model's held-out loss rises with longer training, "
          "while on the full data it falls", ("scaling",), judge_scaling_overfit),
    Claim("scaling-predicts", "The held-out loss of masked image modelling predicts the downstream score (rank "
          "correlation over the sweep's models x data fractions x budgets)", ("scaling",), judge_scaling_predicts),
    Claim("fd", "Feature distillation of a contrastive teacher (SimCLR; MoCo v3 beside it) improves its fine-tuning",
          tuple(_ft(m, f) for t in FD_TEACHERS for m in (fd_name(t), t) for f in FRACTIONS) + FD_TEACHERS
          + tuple(fd_name(t) for t in FD_TEACHERS), judge_fd),
    Claim("avgdist", "The masking strategy that fine-tunes best has a middle AvgDist (SimMIM: 10-20 px at 192 px), "
          "not the lowest or the highest",
          tuple(_ft(avgdist_name(*x), AVGDIST_FRACTION) for x in AVGDIST), judge_avgdist),
    Claim("vq-tokenizer", "A VQ-VAE image tokenizer keeps held-out images better than the same number of bits "
          "without learning (its token grid, log2(codes) bits per cell)", ("vqvae", "vqvae-fmnist"),
          judge_vq_tokenizer),
    Claim("beit", "BEiT (predicting the visual tokens of masked patches) improves a ViT over random initialisation "
          "(frozen probes and fine-tuning), and against SimMIM's pixel regression at the same budget",
          ("beit", "random:beit", MIM_BASELINE, *(_ft(m, f) for m in ("beit", "random:beit", MIM_BASELINE)
                                                  for f in BEIT_FRACTIONS)), judge_beit),
    Claim("text-to-image", "A DALL-E-style causal Transformer over [caption; visual tokens] draws images for held-out "
          "captions that a CLIP judge matches to their captions far above chance (R-precision)", ("dalle",),
          judge_text_to_image),
    Claim("captioning", "An encoder-decoder captioner describes held-out images better than copying the caption of "
          "the nearest training image (CIDEr-D, BLEU-4)", ("caption",), judge_captioning),
]  # fmt: skip
FLOOR_TABLE = (*(n for n in PRETRAIN if n not in ("clip", "siglip")), "beit")
"""Presets in the per-objective table against their random floors."""


def needed(claims: list[Claim], floors: bool) -> list[str]:
    """Experiments to run, in a stable order (pre-training before the fine-tunings that start from it)."""
    names = {n for c in claims for n in c.needs}
    if floors:
        names |= {x for n in FLOOR_TABLE for x in (n, f"random:{n}")}
    while deps := {d for n in names for d in EXPERIMENTS[n].depends_on} - names:
        names |= deps
    order = {k: i for i, k in enumerate(EXPERIMENTS)}
    return sorted(set(names), key=lambda n: (EXPERIMENTS[n].kind == "finetune", order[n]))


def pct(v: float) -> str:
    return f"{100 * v:.2f} %"


def claim_markdown(c: Claim, v: Verdict) -> str:
    lines = [f"### {c.name}: {'holds' if v.holds else 'does not hold at this scale'}", "", c.statement, "",
             "| comparison | a | b | a − b | needed | counts |", "|---|---|---|---|---|---|"]  # fmt: skip
    for x in v.comparisons:
        diff, margin = x.show_diff(x.a - x.b), x.show_diff(x.margin).lstrip("+")
        need = f"> {x.factor:g} × b" if x.factor != 1 else (f"> {margin} (2 SE)" if x.margin else "> 0")
        lines.append(f"| {x.label} | {x.show(x.a)} | {x.show(x.b)} | {diff} | {need} | {'yes' if x.holds else 'no'} |")
    if v.note:
        lines += ["", v.note]
    for k, val in v.extra.items():
        lines += ["", f"{k.replace('_', ' ')}: {'holds' if val else 'does not hold at this scale'}"]
    return "\n".join(lines)


def floor_markdown(results: dict) -> str:
    lines = ["| preset | backbone | steps × batch | kNN | random kNN | linear probe | random linear probe | above both |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for n in FLOOR_TABLE:
        if n not in results or f"random:{n}" not in results:
            continue
        p, q = results[n], results[f"random:{n}"]
        above = p["knn_acc"] > q["knn_acc"] and p["linear_probe_acc"] > q["linear_probe_acc"]
        lines.append(f"| `{p['preset']}` | `{p['backbone']}` | {p['steps']} × {p['batch_size']} | {pct(p['knn_acc'])} | "
                     f"{pct(q['knn_acc'])} | {pct(p['linear_probe_acc'])} | {pct(q['linear_probe_acc'])} | "
                     f"{'yes' if above else '**no**'} |")  # fmt: skip
    return "\n".join(lines)


def _figure(size: tuple[float, float]):
    """A figure and its axes, drawn off-screen (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt.subplots(figsize=size)


def _write(fig, path: Path) -> None:
    from matplotlib import pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot(c: Claim, v: Verdict, path: Path) -> None:

    fig, ax = _figure((8, 0.6 * len(v.comparisons) + 1.2))
    y = range(len(v.comparisons))
    scale = [100 if x.unit == "%" else 1 for x in v.comparisons]
    ax.barh([i + 0.2 for i in y], [k * x.a for k, x in zip(scale, v.comparisons)], height=0.4, label="a",
            color="tab:blue")  # fmt: skip
    ax.barh([i - 0.2 for i in y], [k * x.b * x.factor for k, x in zip(scale, v.comparisons)], height=0.4,
            label="b (× factor)", color="tab:gray")  # fmt: skip
    ax.set_yticks(list(y), [x.label for x in v.comparisons], fontsize=7)
    ax.set_xlabel("accuracy / recall (%)" if all(x.unit == "%" for x in v.comparisons) else "value")
    ax.set_title(f"{c.name}: {'holds' if v.holds else 'does not hold at this scale'}", fontsize=9)
    ax.legend(fontsize=7)
    _write(fig, path)


def plot_avgdist(c: Claim, v: Verdict, path: Path) -> None:
    """Fine-tuning accuracy against AvgDist, one point per masking strategy."""

    pts = v.data["points"]
    fig, ax = _figure((6, 4))
    ax.plot([p["avg_dist"] for p in pts], [100 * p["finetune_acc"] for p in pts], marker="o")
    for p in pts:
        ax.annotate(f"{p['patch']}px/{p['ratio']:.0%}", (p["avg_dist"], 100 * p["finetune_acc"]), fontsize=7,
                    textcoords="offset points", xytext=(3, 3))  # fmt: skip
    ax.set_xlabel("AvgDist (px, 32-px images)")
    ax.set_ylabel(f"fine-tuned accuracy, {AVGDIST_FRACTION:.0%} of labels (%)")
    ax.set_title(f"{c.name}: {'holds' if v.holds else 'does not hold at this scale'}", fontsize=9)
    _write(fig, path)


PLOTS = {"avgdist": plot_avgdist}
"""Claims with their own plot (the rest: :func:`plot`, one bar pair per comparison)."""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/claims", help="Output directory (runs and results inside it).")
    p.add_argument("--claims", nargs="+", choices=[c.name for c in CLAIMS], default=[c.name for c in CLAIMS])
    p.add_argument("--no-floors", dest="floors", action="store_false",
                   help="Skip the per-objective table of every preset against its random floor.")  # fmt: skip
    p.add_argument("--accelerator", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--precision", default="32-true", help="e.g. bf16-mixed on a GPU")
    p.add_argument("--list", action="store_true", help="Print the experiments it would run and stop.")
    p.add_argument("--only", nargs="+", metavar="EXPERIMENT", default=None,
                   help="Run only these of the experiments (see --list); the report covers the claims measured so far.")
    a = p.parse_args()
    claims = [c for c in CLAIMS if c.name in a.claims]
    names = needed(claims, a.floors)
    if a.only:
        unknown = sorted(set(a.only) - set(names))
        if unknown:
            p.error(f"--only {unknown}: not among the experiments of these claims: {names}")
        names = [n for n in names if n in a.only]
    out = Path(a.out)
    path = out / "results.json"
    saved = json.loads(path.read_text()) if path.exists() else {"experiments": {}}
    results = saved["experiments"]
    if a.list:
        for n in names:
            print(f"{'done' if n in results else 'todo'}  {n}  ({EXPERIMENTS[n].kind} {EXPERIMENTS[n].preset})")
        return
    out.mkdir(parents=True, exist_ok=True)
    settings = Settings(out, a.accelerator, a.precision)
    machine = machine_of(a.accelerator)
    commit = _commit()
    for i, n in enumerate(names, 1):
        if n in results:
            continue
        print(f"[claims {i}/{len(names)}] {n}", flush=True)
        results[n] = {**run_experiment(n, settings), "date": datetime.date.today().isoformat(), "machine": machine,
                      "commit": commit}
        path.write_text(json.dumps({"experiments": results}, indent=2) + "\n")
    report(claims, results, out, a.floors)


def machine_of(accelerator: str) -> str:
    """What ran an experiment, recorded with it: the CPU's architecture and the instruction set
    torch's kernels use (``AVX2`` / ``AVX512``: it changes speed, and which matmul route ``auto``
    picks), the core count, and the accelerator (with the GPU's name on CUDA)."""
    import os

    import torch

    cpu = f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores"
    if accelerator == "cuda" and torch.cuda.is_available():
        return f"{cpu}, cuda {torch.cuda.get_device_name()}"
    return f"{cpu}, accelerator {accelerator}"


def _commit() -> str:
    """The code's git commit (with ``+changes`` when the work tree differs), recorded with each result."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True)  # fmt: skip
    except OSError:
        return "unknown"
    return rev.stdout.strip() + ("+changes" if dirty.stdout.strip() else "") if rev.returncode == 0 else "unknown"


def report(claims: list[Claim], results: dict, out: Path, floors: bool) -> None:
    """Write claims.json, claims.md and one plot per claim; print the Markdown."""
    missing = {c.name: [n for n in c.needs if n not in results] for c in claims}
    parts = [f"### {c.name}: not measured yet (missing {', '.join(missing[c.name])})" for c in claims if missing[c.name]]
    claims = [c for c in claims if not missing[c.name]]
    verdicts = {c.name: c.judge(results) for c in claims}
    parts = [claim_markdown(c, verdicts[c.name]) for c in claims] + parts
    if floors:
        parts.append("### Every preset against its random floor\n\n" + floor_markdown(results))
    md = "\n\n".join(parts) + "\n"
    (out / "claims.md").write_text(md)
    blob = {c.name: {"statement": c.statement, "holds": verdicts[c.name].holds, "note": verdicts[c.name].note,
                     **verdicts[c.name].extra, **verdicts[c.name].data,
                     "comparisons": [{**x.__dict__, "margin": x.margin, "holds": x.holds}
                                     for x in verdicts[c.name].comparisons]} for c in claims}  # fmt: skip
    (out / "claims.json").write_text(json.dumps(blob, indent=2) + "\n")
    for c in claims:
        (PLOTS.get(c.name, plot))(c, verdicts[c.name], out / f"{c.name}.png")
    print(md)


if __name__ == "__main__":
    main()
