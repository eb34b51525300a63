"""``convergent sweep``: bad sweep files refused before anything trains; a tiny sweep end to end
through the CLI on the bundled data; a killed sweep resumes without redoing finished points; the
dry run; fine-tuning scores; the parallel dispatcher."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from convergent.cli import main
from convergent.commands.sweep import load_sweep
from convergent.data.builtin.fashion_mnist import BUNDLED_DIR
from convergent.training.checkpoint import LATEST, complete_checkpoints
from convergent.training.loop import Trainer
from convergent.workflows import sweep as sweep_workflow
from convergent.workflows.sweep import prepare_sweep, run_sweep, run_sweep_parallel
from convergent.workflows.sweep_parallel import DEVICE_VARIABLE, dispatch

TINY = Path(__file__).with_name("sweep-tiny.yaml")


def sweep_file(tmp_path: Path, name: str = "sweep.yaml", **changes) -> Path:
    """The tiny sweep on the bundled data, writing under ``tmp_path/out``, with ``changes``
    (top-level keys; ``grid`` / ``downstream`` / ``overrides`` entries merged)."""
    data = yaml.safe_load(TINY.read_text())
    data["overrides"]["data.root"] = str(BUNDLED_DIR)
    data["out"] = str(tmp_path / "out")
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def fits(monkeypatch) -> list[tuple[Path, bool]]:
    """Every ``Trainer.fit`` call: ``(run directory, resume)``."""
    calls, real = [], Trainer.fit

    def counted(self, task, dataset, transform=None, resume=False, callbacks=()):
        calls.append((Path(self.run_dir), resume))
        return real(self, task, dataset, transform, resume, callbacks)

    monkeypatch.setattr(Trainer, "fit", counted)
    return calls


@pytest.mark.parametrize("changes, message", [
    ({"grid": {"variants": ["swinv2_mcro"]}}, "grid.variants: unknown backbone 'swinv2_mcro'; did you mean swinv2_micro"),
    ({"grid": {"variants": ["bert_tiny"]}}, "grid.variants must all be image backbones"),
    ({"preset": "simmim-swinv2-fmnis"}, "preset: unknown preset 'simmim-swinv2-fmnis'; did you mean simmim-swinv2-fmnist"),
    ({"grid": {"fractions": []}}, "grid.fractions is empty"),
    ({"grid": {"steps": []}}, "grid.steps is empty"),
    ({"grid": {"variants": []}}, "grid.variants is empty"),
    ({"grid": {"fractions": [0.5, 1.5]}}, "grid.fractions must be in (0, 1], got 1.5"),
    ({"grid": {"fractions": [0.0]}}, "grid.fractions must be in (0, 1], got 0.0"),
    ({"grid": {"steps": [10, 0]}}, "grid.steps must be >= 1, got 0"),
    ({"grid": {"steps": [-5]}}, "grid.steps must be >= 1, got -5"),
    ({"grid": {"steps": [2, 2]}}, "grid.steps repeats a value"),
    ({"downstream": {"kind": "knnn"}}, "downstream.kind must be one of knn, linear-probe, finetune, none, got 'knnn'"),
    ({"grid": {"step": [2]}}, "unknown keys ['step']"),
    ({"overrides": {"optim.lrr": 0.1}}, "overrides.optim: unknown keys ['lrr']"),
    ({"overrides": {"data.batch_size": -2}}, "data.batch_size must be >= 1, got -2"),
    ({"grid": {"fractions": [0.1]}}, "grid.fractions: 0.1 of the 64 training samples is 6, less than one batch"),
])  # fmt: skip
def test_bad_sweep_is_one_line_naming_the_key_before_training(tmp_path, capsys, fits, changes, message):
    path = sweep_file(tmp_path, **changes)
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("convergent sweep: error: ") and str(path) in err and message in err, err
    assert len(err.splitlines()) == 1
    assert not fits and not (tmp_path / "out").exists()  # nothing trained, nothing written


def test_missing_sweep_file_suggests_the_bundled_one(capsys):
    assert main(["sweep", "scaling-simmim-fmnst"]) == 2
    assert "did you mean scaling-simmim-fmnist" in capsys.readouterr().err


def test_bundled_sweep_resolves_and_plans():
    sweep, base, where = load_sweep("scaling-simmim-fmnist")
    assert sweep.grid.variants == ("swinv2_nano", "swinv2_micro", "swinv2_mini") and base.data.batch_size == 64
    plan = prepare_sweep(sweep, base, where)[0]
    assert len(plan.runs) == 12 and len(plan.points) == 36
    run = plan.run("swinv2_micro-f0.1")
    assert run.distinct_samples == 600 and run.cfg.data.limit == 600 and run.cfg.trainer.max_steps == 160
    assert run.cfg.trainer.checkpoint_every == 40 and run.cfg.model.backbone == "swinv2_micro"
    assert not run.cfg.eval.knn  # the sweep scores each budget itself


def test_tiny_sweep_end_to_end_through_the_cli(tmp_path, capsys, fits):
    path = sweep_file(tmp_path)
    assert main(["sweep", str(path)]) == 0
    out = tmp_path / "out"
    assert len(fits) == 1  # one run to the largest budget, both budgets measured on the way
    results = json.loads((out / "results.json").read_text())
    points = results["points"]
    assert [p["key"] for p in points] == ["swinv2_test-f1-s2", "swinv2_test-f1-s3"]
    for p in points:
        assert p["done"] and p["status"] == "ok" and p["val_samples"] == 32 and 0 <= p["score"] <= 1
        assert p["params"] > 0 and p["train_flops"] == p["flops_per_step"] * p["steps"] > 0
        assert p["samples_seen"] == 16 * p["steps"] and p["distinct_samples"] == 64
    assert points[0]["val_loss"] != points[1]["val_loss"]
    fit = json.loads((out / "fit.json").read_text())
    assert fit["fit"] is None and "needs at least 6" in fit["fit_skipped"]
    assert fit["frontier"] and fit["spearman"]["points"] == 2
    assert (out / "scaling.png").stat().st_size > 10_000
    shown = capsys.readouterr().out
    assert "not fitted: 2 point(s)" in shown and "swinv2_test-f1-s3" in shown

    assert main(["sweep", str(sweep_file(tmp_path, seed=1))]) == 2  # points measured otherwise are not mixed in
    assert "swinv2_test-f1-s2.json: measured with seed 0, this sweep has 1" in capsys.readouterr().err
    assert len(fits) == 1


def test_killed_sweep_resumes_without_redoing_finished_points(tmp_path, fits):
    """Two runs of two budgets. The second run is then 'killed' after its step-2 checkpoint,
    before its step-2 point was written: the rerun leaves the first run alone, measures the
    step-2 point from the checkpoint and resumes training from it, with the same numbers."""
    path = sweep_file(tmp_path, grid={"fractions": [0.5, 1.0], "steps": [2, 4]})
    sweep, base, where = load_sweep(str(path))
    plan, train_set, test_set = prepare_sweep(sweep, base, where)
    run_sweep(plan, train_set, test_set)
    assert [(p.name, resume) for p, resume in fits] == [("swinv2_test-f0.5", False), ("swinv2_test-f1", False)]
    first = {p.key: json.loads(plan.paths.point(p.key).read_text()) for p in plan.points}

    killed = plan.paths.runs / "swinv2_test-f1"  # as if killed while measuring step 2
    for key in ("swinv2_test-f1-s2", "swinv2_test-f1-s4"):
        plan.paths.point(key).unlink()
    for name in ("summary.json", "summary_train.json"):
        (killed / name).unlink()
    step4 = complete_checkpoints(killed)[-1]
    assert step4.name == "step-000004"
    for f in step4.iterdir():
        f.unlink()
    step4.rmdir()
    (killed / "checkpoints" / LATEST).write_text("step-000002")
    kept = {k: plan.paths.point(k).stat().st_mtime_ns for k in ("swinv2_test-f0.5-s2", "swinv2_test-f0.5-s4")}

    fits.clear()
    run_sweep(plan, train_set, test_set)
    assert fits == [(killed, True)]  # only the killed run trains again, from its checkpoint
    assert {k: plan.paths.point(k).stat().st_mtime_ns for k in kept} == kept  # finished points untouched
    again = {p.key: json.loads(plan.paths.point(p.key).read_text()) for p in plan.points}
    for key in ("swinv2_test-f1-s2", "swinv2_test-f1-s4"):  # the same weights, the same masks: the same loss
        assert again[key]["val_loss"] == pytest.approx(first[key]["val_loss"], rel=1e-6, abs=1e-7), key
        assert again[key]["score"] == pytest.approx(first[key]["score"])
    summary = json.loads((killed / "summary_train.json").read_text())
    assert summary["steps"] == 4 and summary["status"] == "ok"

    fits.clear()
    run_sweep(plan, train_set, test_set)
    assert fits == []  # all done: nothing trains


def test_dry_run_prints_points_and_an_estimate_and_trains_nothing(tmp_path, capsys, fits):
    path = sweep_file(tmp_path, grid={"fractions": [0.5, 1.0]})
    assert main(["sweep", str(path), "--dry-run", "--out", str(tmp_path / "dry")]) == 0
    shown = capsys.readouterr().out
    for key in ("swinv2_test-f0.5-s2", "swinv2_test-f0.5-s3", "swinv2_test-f1-s2", "swinv2_test-f1-s3"):
        assert key in shown
    assert "47.2k" in shown and "4 points in 2 runs; estimated" in shown
    assert not fits and not (tmp_path / "dry").exists() and not (tmp_path / "out").exists()


def test_finetune_score(tmp_path, fits):
    path = sweep_file(tmp_path, grid={"steps": [2]}, downstream={"kind": "finetune", "finetune_steps": 2,
                                                                  "finetune_labels": 32, "finetune_batch_size": 16})
    assert main(["sweep", str(path)]) == 0
    point = json.loads((tmp_path / "out" / "points" / "swinv2_test-f1-s2.json").read_text())
    assert point["done"] and point["score_name"] == "finetune_acc" and 0 <= point["score"] <= 1
    assert Path(point["encoder"], "model.safetensors").is_file() and point["finetune_status"] == "ok"
    assert len(fits) == 2  # the pre-training run and the fine-tuning


def test_devices_need_cuda(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a machine with CUDA devices")
    assert main(["sweep", str(sweep_file(tmp_path)), "--devices", "2"]) == 2
    assert "this machine has 0 CUDA device(s)" in capsys.readouterr().err


def test_dispatch_runs_one_job_per_device_at_a_time(tmp_path):
    show = "import os, sys; print(os.environ['{}']); sys.exit({})"
    jobs = {f"job{i}": [sys.executable, "-c", show.format(DEVICE_VARIABLE, i % 2)] for i in range(3)}
    codes = dispatch(jobs, 2, tmp_path / "logs", poll_s=0.05)
    assert codes == {"job0": 0, "job1": 1, "job2": 0}
    devices = [int((tmp_path / "logs" / f"job{i}.log").read_text()) for i in range(3)]
    assert devices[:2] == [0, 1] and devices[2] in (0, 1)


def test_a_bad_sweep_is_refused_without_importing_torch(tmp_path):
    path = sweep_file(tmp_path, grid={"steps": [0]})
    code = (
        "import sys\nfrom convergent.cli import main\n"
        f"rc = main(['sweep', {str(path)!r}])\nassert rc == 2, rc\n"
        "assert 'torch' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "grid.steps must be >= 1" in out.stderr


def test_parallel_runs_are_worker_processes_that_write_the_same_points(tmp_path):
    """``--devices N``'s path, on CPU workers: each run is ``convergent sweep OUT/sweep.yaml
    --only RUN`` in its own process (CUDA_VISIBLE_DEVICES=i); the parent measured the costs
    first and gathers the points, the fit and the pictures."""
    path = sweep_file(tmp_path, grid={"fractions": [0.5, 1.0], "steps": [2]})
    sweep, base, where = load_sweep(str(path))
    plan, train_set, _ = prepare_sweep(sweep, base, where)
    report = run_sweep_parallel(plan, train_set, devices=2)
    assert "failed_runs" not in report and report["points"] == 2
    logs = plan.paths.out / "logs"
    for run in ("swinv2_test-f0.5", "swinv2_test-f1"):
        assert "sweep: " + run + "-s2: val_loss" in (logs / f"{run}.log").read_text()
    points = json.loads(plan.paths.results.read_text())["points"]
    assert [p["key"] for p in points] == ["swinv2_test-f0.5-s2", "swinv2_test-f1-s2"] and all(p["done"] for p in points)
    assert plan.paths.plot.is_file() and plan.paths.fit.is_file()
    assert "sweep: measuring" not in (logs / "swinv2_test-f1.log").read_text()  # the workers read the costs


def test_costs_read_back_are_not_written_again(tmp_path, monkeypatch):
    """Parallel workers only read ``costs.json`` (their parent measured it): a worker that
    rewrote it raced the others' renames."""
    from convergent.workflows import sweep_costs

    sweep, base, where = load_sweep(str(sweep_file(tmp_path, grid={"fractions": [0.5, 1.0], "steps": [2]})))
    plan, train_set, _ = prepare_sweep(sweep, base, where)
    first = sweep_costs.variant_costs(plan, train_set)
    assert plan.paths.costs.is_file()
    monkeypatch.setattr(sweep_costs, "write_json", lambda *a: pytest.fail("costs.json rewritten"))
    monkeypatch.setattr(sweep_costs, "measure_variant", lambda *a: pytest.fail("costs measured again"))
    assert sweep_costs.variant_costs(plan, train_set) == first


def test_a_preempted_run_stops_the_sweep_with_status_75(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sweep_workflow, "run_pretrain", lambda cfg, resume_dir=None, callbacks=(): {
        "status": "preempted", "reason": "SIGTERM after step 1 of 3"})
    assert main(["sweep", str(sweep_file(tmp_path))]) == 75
    assert "PREEMPTED: run swinv2_test-f1 stopped (SIGTERM after step 1 of 3); rerun the sweep" in capsys.readouterr().out
    assert not list((tmp_path / "out" / "points").glob("*.json"))
