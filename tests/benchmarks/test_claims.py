"""benchmarks/claims.py: verdicts follow the numbers (both ways), the experiments needed come in
a runnable order, and a rerun skips finished experiments."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import claims  # noqa: E402
import claims_runs  # noqa: E402


def test_comparison_counts_only_beyond_two_standard_errors():
    close = claims.Comparison("x", 0.705, 0.700, n=10_000)  # SE of the difference ~0.65 pts
    far = claims.Comparison("x", 0.730, 0.700, n=10_000)
    assert close.margin == pytest.approx(2 * ((0.705 * 0.295 + 0.7 * 0.3) / 10_000) ** 0.5)
    assert not close.holds and far.holds
    assert not claims.Comparison("x", 0.69, 0.70, n=10_000).holds
    assert claims.Comparison("recall", 0.05, 0.004, factor=10).holds
    assert not claims.Comparison("recall", 0.03, 0.004, factor=10).holds


def _probe(knn: float, lp: float, n: int = 10_000, backbone: str = "vit_micro") -> dict:
    return {"knn_acc": knn, "linear_probe_acc": lp, "n_test": n, "backbone": backbone, "preset": "p", "steps": 1,
            "batch_size": 1}  # fmt: skip


def test_data2vec_claim_needs_both_modalities_above_their_floors():
    r = {"data2vec-image": _probe(0.80, 0.82), "random:data2vec-image": _probe(0.70, 0.72),
         "data2vec-text": _probe(0.86, 0.88), "random:data2vec-text": _probe(0.84, 0.80)}  # fmt: skip
    v = claims.judge_data2vec(r)
    assert [c.holds for c in v.comparisons] == [True, True, True, True]
    assert v.holds
    r["data2vec-text"] = _probe(0.845, 0.88)  # kNN within noise of the floor
    assert not claims.judge_data2vec(r).holds


def test_mim_claim_reports_where_the_gain_is_larger():
    r = {}
    for m, backbone in (("simmim", "swinv2_micro"), ("mae", "vit_micro")):
        for f, (pre, rnd) in zip(claims_runs.FRACTIONS, ((0.70, 0.60), (0.80, 0.78))):
            r[f"finetune:{m}:{f:g}"] = {"test_acc": pre, "n_test": 10_000, "backbone": backbone}
            r[f"finetune:random:{m}:{f:g}"] = {"test_acc": rnd, "n_test": 10_000, "backbone": backbone}
    v = claims.judge_mim_finetune(r)
    assert v.holds and v.extra["helps_most_with_few_labels"]
    r["finetune:mae:0.01"]["test_acc"] = 0.61  # gain 1 pt at 1 %, 2 pts at 10 %: within noise at 1 %
    v = claims.judge_mim_finetune(r)
    assert not v.holds and not v.extra["helps_most_with_few_labels"]


def test_needed_runs_pretraining_before_the_finetunings_that_start_from_it():
    names = claims.needed(claims.CLAIMS, floors=True)
    assert len(names) == len(set(names))
    for i, n in enumerate(names):
        e = claims_runs.EXPERIMENTS[n]
        if e.kind == "finetune" and e.init is not None:
            assert e.init in names[:i], n
    for c in claims.CLAIMS:  # every claim names experiments that exist
        assert set(c.needs) <= set(claims_runs.EXPERIMENTS)


def test_a_rerun_skips_finished_experiments_and_writes_every_report(tmp_path, monkeypatch):
    ran = []

    def fake_run(name, settings):
        ran.append(name)
        return {"knn_acc": 0.8, "linear_probe_acc": 0.8, "n_test": 100, "backbone": "b", "preset": "p", "steps": 1,
                "batch_size": 1, "wall_s": 0.0}  # fmt: skip

    monkeypatch.setattr(claims, "run_experiment", fake_run)
    args = ["claims.py", "--out", str(tmp_path), "--claims", "text", "--no-floors"]
    monkeypatch.setattr(sys, "argv", args)
    claims.main()
    assert ran == ["mlm", "random:mlm", "simcse", "random:simcse"]
    assert set(json.loads((tmp_path / "results.json").read_text())["experiments"]) == set(ran)
    verdict = json.loads((tmp_path / "claims.json").read_text())["text"]
    assert verdict["holds"] is False  # equal accuracies do not beat the floor
    assert (tmp_path / "text.png").stat().st_size > 0 and "does not hold" in (tmp_path / "claims.md").read_text()
    ran.clear()
    claims.main()
    assert ran == []


def test_only_runs_the_named_experiments_and_reports_the_rest_as_not_measured(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(claims, "run_experiment", lambda name, s: ran.append(name) or _probe(0.9, 0.9))
    monkeypatch.setattr(sys, "argv", ["claims.py", "--out", str(tmp_path), "--claims", "text", "--no-floors",
                                      "--only", "mlm", "random:mlm"])  # fmt: skip
    claims.main()
    assert ran == ["mlm", "random:mlm"]
    assert "text: not measured yet (missing simcse, random:simcse)" in (tmp_path / "claims.md").read_text()
    monkeypatch.setattr(sys, "argv", ["claims.py", "--out", str(tmp_path), "--only", "nonsense"])
    with pytest.raises(SystemExit):
        claims.main()


def _avgdist_results(accs: list[float]) -> tuple[dict, dict]:
    r, dists = {}, {}
    for (patch, ratio), acc, d in zip(claims_runs.AVGDIST, accs, range(len(accs))):
        r[f"finetune:{claims_runs.avgdist_name(patch, ratio)}:{claims_runs.AVGDIST_FRACTION:g}"] = {
            "test_acc": acc, "n_test": 10_000, "backbone": "swinv2_micro"}  # fmt: skip
        dists[(patch, ratio)] = float(d)  # AvgDist rising in the order of AVGDIST
    return r, dists


def test_avgdist_claim_needs_the_best_strategy_inside_the_range():
    middle = [0.60, 0.66, 0.70, 0.66, 0.62, 0.60][: len(claims_runs.AVGDIST)]
    v = claims.judge_avgdist(*_avgdist_results(middle))
    assert v.holds and [p["avg_dist"] for p in v.data["points"]] == sorted(p["avg_dist"] for p in v.data["points"])
    at_end = [0.70, 0.66, 0.65, 0.64, 0.62, 0.60][: len(claims_runs.AVGDIST)]
    assert not claims.judge_avgdist(*_avgdist_results(at_end)).holds
    flat = [0.650, 0.652, 0.655, 0.651, 0.650, 0.649][: len(claims_runs.AVGDIST)]  # within noise of both ends
    assert not claims.judge_avgdist(*_avgdist_results(flat)).holds


def test_avgdist_of_is_what_convergent_masks_prints():
    from convergent.masking import SimMIMMaskGenerator, avg_dist, mask_to_pixels

    masks = SimMIMMaskGenerator(32, 8, 4, 0.6)(256, generator=__import__("torch").Generator().manual_seed(0))
    assert claims.avgdist_of(8, 0.6) == pytest.approx(avg_dist(mask_to_pixels(masks, 8, 4)).mean().item())
    assert claims.avgdist_of(4, 0.3) < claims.avgdist_of(8, 0.6) < claims.avgdist_of(16, 0.5)


def test_experiments_that_read_another_run_come_after_it_and_pull_it_in(tmp_path):
    names = claims.needed([c for c in claims.CLAIMS if c.name == "fd"], floors=False)
    for teacher in claims_runs.FD_TEACHERS:
        student = claims_runs.fd_name(teacher)
        assert names.index(teacher) < names.index(student) < names.index(f"finetune:{student}:0.1")
    s = claims_runs.Settings(tmp_path)
    with pytest.raises(SystemExit, match="reads the encoder of experiment 'simclr'"):
        claims_runs.run_experiment("fd", s)
    assert claims_runs._pretrain_config("fd", claims_runs.EXPERIMENTS["fd"], s).task.fd.teacher == str(
        tmp_path / "runs" / "simclr" / "encoder")


def test_pretrain_overrides_merge_into_the_preset_in_depth(tmp_path):
    s = claims_runs.Settings(tmp_path)
    e = claims_runs.EXPERIMENTS[claims_runs.avgdist_name(4, 0.3)]
    cfg = claims_runs._pretrain_config("x", e, s)
    assert (cfg.task.simmim.mask_patch_size, cfg.task.simmim.mask_ratio) == (4, 0.3)
    assert cfg.task.name == "simmim" and cfg.model.backbone == "swinv2_micro" and not cfg.eval.knn
    assert cfg.trainer.run_name == "x" and cfg.trainer.checkpoint_every == cfg.trainer.max_steps // 4


def test_every_avgdist_strategy_trains_the_same_fixed_budget_apart_from_the_preset(tmp_path):
    s = claims_runs.Settings(tmp_path)
    preset = claims_runs._pretrain_config("simmim", claims_runs.EXPERIMENTS["simmim"], s)
    names = {claims_runs.avgdist_name(*x) for x in claims_runs.AVGDIST}
    assert len(names) == len(claims_runs.AVGDIST) and "simmim" not in names  # the preset's strategy runs again
    for patch, ratio in claims_runs.AVGDIST:
        cfg = claims_runs._pretrain_config("x", claims_runs.EXPERIMENTS[claims_runs.avgdist_name(patch, ratio)], s)
        assert cfg.trainer.max_steps == claims_runs.AVGDIST_STEPS
        assert (cfg.task.simmim.mask_patch_size, cfg.task.simmim.mask_ratio) == (patch, ratio)
        assert (cfg.optim.lr, cfg.data.batch_size) == (preset.optim.lr, preset.data.batch_size)


def test_model_size_claim_compares_gains_with_the_noise_of_four_accuracies():
    r = {}
    small, large = claims_runs.SIZE_VARIANTS
    for m, (pre, rnd) in ((small, (0.70, 0.66)), (large, (0.75, 0.65))):
        for f in claims_runs.SIZE_FRACTIONS:
            r[f"finetune:{m}:{f:g}"] = {"test_acc": pre, "n_test": 10_000, "backbone": m}
            r[f"finetune:random:{m}:{f:g}"] = {"test_acc": rnd, "n_test": 10_000, "backbone": m}
    v = claims.judge_model_size(r)
    se = (0.7 * 0.3 / 1e4 + 0.75 * 0.25 / 1e4 + 0.66 * 0.34 / 1e4 + 0.65 * 0.35 / 1e4) ** 0.5
    assert v.comparisons[0].margin == pytest.approx(2 * se) and v.holds  # gains 10 vs 4 pts
    for f in claims_runs.SIZE_FRACTIONS:
        r[f"finetune:{large}:{f:g}"]["test_acc"] = 0.705  # gain 5.5 vs 4 pts: within 2 SE (~1.8 pts)
    assert not claims.judge_model_size(r).holds


def test_model_size_finetunings_start_from_the_sweeps_runs(tmp_path):
    names = claims.needed([c for c in claims.CLAIMS if c.name == "model-size"], floors=False)
    assert names[0] == "scaling"
    e = claims_runs.EXPERIMENTS[f"finetune:{claims_runs.SIZE_VARIANTS[1]}:0.1"]
    assert e.init_dir == f"scaling/runs/{claims_runs.SIZE_VARIANTS[1]}-f1"
    with pytest.raises(SystemExit, match="scaling/runs/swinv2_mini-f1"):
        claims_runs.run_experiment(f"finetune:{claims_runs.SIZE_VARIANTS[1]}:0.1", claims_runs.Settings(tmp_path))


def _sweep_points(small_curve, full_curve, knn=None) -> dict:
    points = []
    for variant, params in (("swinv2_nano", 0.6e6), ("swinv2_mini", 5.5e6)):
        for fraction, curve in ((0.1, small_curve), (1.0, full_curve)):
            for steps, loss in zip((40, 80, 160), curve):
                loss = loss + (0.01 if variant == "swinv2_nano" else 0.0)
                points.append({"variant": variant, "params": params, "fraction": fraction, "steps": steps,
                               "val_loss": loss, "score": None if knn is None else knn(loss), "score_name": "knn"})  # fmt: skip
    return {"scaling": {"points": points}}


def test_scaling_overfit_claim_reads_the_largest_model_on_both_fractions():
    v = claims.judge_scaling_overfit(_sweep_points((0.48, 0.50, 0.51), (0.47, 0.46, 0.45)))
    assert v.holds and "swinv2_mini" in v.comparisons[0].label and "0.4800 → 0.5000 → 0.5100" in v.note
    assert not claims.judge_scaling_overfit(_sweep_points((0.48, 0.47, 0.46), (0.47, 0.46, 0.45))).holds
    md = claims.claim_markdown(next(c for c in claims.CLAIMS if c.name == "scaling-overfit"), v)
    assert "0.5100" in md and "%" not in md.split("|---|")[1]


def test_scaling_predicts_claim_is_a_one_sided_permutation_test():
    r = _sweep_points((0.48, 0.50, 0.51), (0.47, 0.46, 0.45), knn=lambda loss: 1.0 - loss)  # perfectly ranked
    v = claims.judge_scaling_predicts(r, permutations=2000)
    assert v.holds and v.comparisons[0].a == pytest.approx(1.0, abs=0.01)  # ties among the losses
    r = _sweep_points((0.48, 0.50, 0.51), (0.47, 0.46, 0.45), knn=lambda loss: loss)  # the wrong direction
    assert not claims.judge_scaling_predicts(r, permutations=2000).holds


def test_fd_claim_is_judged_on_the_presets_teacher_and_reports_the_other():
    r = {}
    for t, (student, teacher) in zip(claims_runs.FD_TEACHERS, ((0.70, 0.65), (0.33, 0.65))):
        r[t] = _probe(0.7, 0.75)
        r[claims_runs.fd_name(t)] = _probe(0.6, 0.65)
        for f in claims_runs.FRACTIONS:
            r[f"finetune:{claims_runs.fd_name(t)}:{f:g}"] = {"test_acc": student, "n_test": 10_000}
            r[f"finetune:{t}:{f:g}"] = {"test_acc": teacher, "n_test": 10_000}
    v = claims.judge_fd(r)
    assert v.holds and v.extra == {"with a mocov3 teacher": False} and "33.00 % vs 65.00 %" in v.note


def test_each_result_records_the_instruction_set_it_ran_on():
    import torch

    found = claims.machine_of("cpu")
    assert torch.backends.cpu.get_cpu_capability() in found and "cores" in found and found.endswith("accelerator cpu")


def test_vq_tokenizer_claim_needs_the_psnr_gain_beyond_its_paired_noise():
    tok = {"psnr": 24.0, "baseline_psnr": 22.0, "psnr_gain_se": 0.2, "reconstruction_images": 357,
           "codebook_usage": 0.8, "code_perplexity": 300.0, "preset": "p"}  # fmt: skip
    r = {"vqvae": dict(tok), "vqvae-fmnist": dict(tok)}
    v = claims.judge_vq_tokenizer(r)
    assert v.holds and "codebook usage 80.00 %" in v.note
    assert "+2.00 dB" in claims.claim_markdown(next(c for c in claims.CLAIMS if c.name == "vq-tokenizer"), v)
    r["vqvae-fmnist"]["psnr_gain_se"] = 1.5  # a 2 dB gain within 2 SE of noise
    assert not claims.judge_vq_tokenizer(r).holds


def _beit_results(beit: float, simmim: float) -> dict:
    f = claims_runs.BEIT_FRACTIONS[0]
    return {"beit": _probe(beit, beit), "random:beit": _probe(0.70, 0.70), claims_runs.MIM_BASELINE: _probe(simmim, simmim),
            f"finetune:beit:{f:g}": {"test_acc": beit, "n_test": 10_000},
            f"finetune:random:beit:{f:g}": {"test_acc": 0.70, "n_test": 10_000},
            f"finetune:{claims_runs.MIM_BASELINE}:{f:g}": {"test_acc": simmim, "n_test": 10_000}}  # fmt: skip


def test_beit_claim_against_random_with_simmim_as_a_sub_claim():
    v = claims.judge_beit(_beit_results(0.80, 0.75))
    assert v.holds and v.extra["beats SimMIM at the same budget"]
    v = claims.judge_beit(_beit_results(0.80, 0.80))
    assert v.holds and not v.extra["beats SimMIM at the same budget"]
    assert not claims.judge_beit(_beit_results(0.705, 0.60)).holds


def test_generation_claims_compare_with_chance_and_the_nearest_neighbour_caption():
    dalle = {"r_precision": 0.05, "chance": 0.01, "candidates": 100, "num_images": 357}
    assert claims.judge_text_to_image({"dalle": dalle}).holds
    assert not claims.judge_text_to_image({"dalle": {**dalle, "r_precision": 0.015}}).holds  # within noise
    cap = {"cider": 0.9, "nn_cider": 0.5, "cider_gain_se": 0.05, "bleu4": 10.0, "nn_bleu4": 5.0,
           "captioned_images": 357, "caption_examples": ["'a' (ref 'b')"]}  # fmt: skip
    v = claims.judge_captioning({"caption": cap})
    assert v.holds and "'a' (ref 'b')" in v.note
    assert not claims.judge_captioning({"caption": {**cap, "cider_gain_se": 0.3}}).holds


def test_generation_experiments_read_the_suites_own_tokenizers_and_judge(tmp_path):
    e = claims_runs.EXPERIMENTS
    assert e["beit"].depends_on == ("vqvae-fmnist",) and e["dalle"].depends_on == ("vqvae", claims_runs.JUDGE)
    cfg = claims_runs._pretrain_config("beit", e["beit"], claims_runs.Settings(tmp_path))
    assert cfg.task.beit.tokenizer == str(tmp_path / "runs" / "vqvae-fmnist")
    base = claims_runs._pretrain_config(claims_runs.MIM_BASELINE, e[claims_runs.MIM_BASELINE],
                                        claims_runs.Settings(tmp_path))  # fmt: skip
    assert (base.task.name, base.model.backbone, base.trainer.max_steps) == ("simmim", cfg.model.backbone,
                                                                            cfg.trainer.max_steps)  # fmt: skip
    assert (base.eval.layer, base.eval.pooling) == (cfg.eval.layer, cfg.eval.pooling)
