"""Train-step modes: ``trainer.compile`` gives the eager losses and checkpoints with the task's
own parameter names (no ``_orig_mod.`` prefix); ``bf16-mixed`` autocast runs on the CPU and
stays close to fp32."""

from safetensors.torch import load_file

from convergent.training.loop import Trainer
from tests.training_helpers import RegressTask, SyntheticImages, build, configs, eval_transform, read_metrics


def run(tmp_path, compile_: bool, precision: str = "32-true") -> list[float]:
    run_dir = tmp_path / f"{'compiled' if compile_ else 'eager'}-{precision}"
    trainer_cfg, optim_cfg = configs(max_steps=3, compile=compile_, checkpoint_every=3, precision=precision)
    trainer = Trainer(trainer_cfg, optim_cfg, run_dir, batch_size=8, progress=False)
    task = build(RegressTask)
    trainer.fit(task, SyntheticImages(24), eval_transform)
    keys = set(load_file(str(run_dir / "checkpoints" / "step-000003" / "model.safetensors")))
    assert keys == set(task.state_dict()), sorted(keys ^ set(task.state_dict()))[:5]
    return [m["loss"] for m in read_metrics(run_dir)]


def test_compiled_step_matches_eager(tmp_path):
    eager, compiled = run(tmp_path, False), run(tmp_path, True)
    assert len(eager) == len(compiled) == 3
    for a, b in zip(eager, compiled):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(a)), (eager, compiled)
    assert len(set(eager)) == 3  # the losses change: a real comparison


def test_bf16_mixed_runs_close_to_fp32(tmp_path):
    fp32, bf16 = run(tmp_path, False), run(tmp_path, False, "bf16-mixed")
    assert fp32 != bf16  # autocast really changed the arithmetic
    for a, b in zip(fp32, bf16):
        assert abs(a - b) <= 0.05 * max(1.0, abs(a)), (fp32, bf16)
