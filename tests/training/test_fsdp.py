"""FSDP2 on CPU (gloo): 2 sharded processes reproduce 1 process; checkpoints hold full state,
resume exactly under FSDP, and open without it. Launched with ``torch.distributed.run``; for
an image task (``ddp_worker``) and for two-tower CLIP (``clip_fsdp_worker``: a 0-d logit
scale, features gathered with gradient)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from convergent.training.fsdp import OPTIMIZER_FORMAT, block_modules, hold_scalars_as_vectors
from tests import clip_ddp_worker, clip_fsdp_worker, ddp_worker
from tests.training_helpers import assert_same_losses, assert_weights_close, build, read_metrics

STEPS = ddp_worker.STEPS
CLIP_STEPS = clip_fsdp_worker.STEPS


def _launch(run_dir: Path, *args: str, worker=ddp_worker) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           worker.__file__, str(run_dir), "2", "1", "fsdp", *args]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _weights(run_dir: Path, step: int = STEPS) -> dict:
    return load_file(str(run_dir / "checkpoints" / f"step-{step:06d}" / "model.safetensors"))


def _killed_copy(run_dir: Path, copy: Path, last_step: int) -> Path:
    """``run_dir`` as if killed before its checkpoint at ``last_step``: that checkpoint and the
    trained weights dropped."""
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "checkpoints" / f"step-{last_step:06d}")
    for f in copy.glob("gathered-*.pt"):
        f.unlink()
    return copy


def _assert_fsdp_matches_single(root: Path, steps: int) -> dict:
    """The 2-process FSDP run under ``root`` reproduced the 1-process one: losses and final
    weights; returns the FSDP run's weights."""
    assert_same_losses(root / "fsdp", root / "single", steps)
    ref = read_metrics(root / "single")
    assert len({round(m["loss"], 6) for m in ref}) == len(ref)  # the losses change: a real comparison
    weights = _weights(root / "fsdp", steps)
    assert_weights_close(weights, _weights(root / "single", steps), atol=1e-5)
    return weights


def _image_task():
    task = build()
    return task, list(task.backbone.blocks)


def _clip_task():
    task = clip_ddp_worker.build()
    return task, [*task.backbone.blocks, *task.text_backbone.blocks]


@pytest.mark.parametrize("make", [_image_task, _clip_task], ids=["image", "clip"])
def test_block_modules_are_the_transformer_blocks(make):
    task, blocks = make()  # CLIP: the text tower's blocks are units too
    units = block_modules(task)
    assert units and all(type(u).__name__ == "Block" for u in units)
    assert len(units) == len(blocks) and all(u is b for u, b in zip(units, blocks))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    _launch(root / "fsdp")  # straight through, checkpoints at 3 and 6
    # as if killed after step 3: resume under FSDP
    _launch(_killed_copy(root / "fsdp", root / "resumed", STEPS), str(STEPS), "resume")
    ddp_worker.main(str(root / "single"), devices=1, accumulate=2)  # 1 process x 2 micro-batches of 4
    return root


def test_fsdp_two_processes_match_one(runs):
    _assert_fsdp_matches_single(runs, STEPS)


def test_fsdp_checkpoint_is_full_and_gathered_back(runs):
    ck = runs / "fsdp" / "checkpoints" / f"step-{STEPS:06d}"
    weights = _weights(runs / "fsdp")
    reference = build().state_dict()
    assert weights.keys() == reference.keys()
    assert all(weights[k].shape == reference[k].shape for k in weights)  # unsharded shapes
    state = torch.load(ck / "state.pt", weights_only=False)
    assert state["optimizer_format"] == OPTIMIZER_FORMAT and state["world_size"] == 2
    assert set(state["optimizer"]["state"]) <= set(weights)  # optimizer state keyed by parameter name
    for rank in (0, 1):  # fit() left the full trained weights in the caller's task on every process
        gathered = torch.load(runs / "fsdp" / f"gathered-{rank}.pt", weights_only=True)
        assert_weights_close(gathered, weights, atol=0)


def test_fsdp_resume_is_exact(runs):
    assert_same_losses(runs / "resumed", runs / "fsdp", STEPS)
    assert_weights_close(_weights(runs / "resumed"), _weights(runs / "fsdp"), atol=1e-6)
    assert (runs / "resumed" / "gathered-0.pt").is_file()


def test_fsdp_checkpoint_resumes_without_fsdp(runs, tmp_path):
    """A checkpoint written under FSDP continues in one plain process (any process count)."""
    run = tmp_path / "plain"
    shutil.copytree(runs / "fsdp", run)
    with pytest.warns(UserWarning, match="RNGs reseeded"):
        summary = ddp_worker.main(str(run), devices=1, accumulate=2, max_steps=STEPS + 2, resume=True)
    assert summary["steps"] == STEPS + 2
    steps = [m["step"] for m in read_metrics(run)]
    assert steps[-3:] == [STEPS, STEPS + 1, STEPS + 2]


def test_block_modules_of_swin_are_its_blocks_not_its_stages():
    from convergent.backbones import build_backbone

    swin = build_backbone("swinv2_test")
    units = block_modules(swin)
    assert len(units) == sum(len(stage.blocks) for stage in swin.layers)
    assert all(any(u is b for stage in swin.layers for b in stage.blocks) for u in units)


def test_scalar_parameters_are_held_as_vectors_and_read_as_scalars():
    """fully_shard refuses 0-d parameters (CLIP's logit scale): held as (1,), read as 0-d."""
    task, batch = clip_ddp_worker.build(), clip_ddp_worker.global_batch()
    ref = task(batch)["loss"]
    hold_scalars_as_vectors(task)
    assert task.state_dict()["logit_scale"].shape == (1,) and task.logit_scale.shape == ()
    loss = task(batch)["loss"]
    loss.backward()
    assert loss.item() == ref.item() and task._parameters["logit_scale"].grad.shape == (1,)


@pytest.fixture(scope="module")
def clip_runs(tmp_path_factory):
    """CLIP: 2 FSDP processes x 4 pairs (checkpoints at 2 and 4), the same resumed from step 2
    under FSDP, and 1 plain process x 8 pairs."""
    root = tmp_path_factory.mktemp("fsdp_clip")
    _launch(root / "fsdp", worker=clip_fsdp_worker)
    _launch(_killed_copy(root / "fsdp", root / "resumed", CLIP_STEPS), str(CLIP_STEPS), "resume",
            worker=clip_fsdp_worker)  # fmt: skip
    clip_fsdp_worker.main(str(root / "single"), devices=1)
    return root


def test_fsdp_clip_two_processes_match_one(clip_runs):
    weights = _assert_fsdp_matches_single(clip_runs, CLIP_STEPS)
    assert abs(weights["logit_scale"].item() - clip_ddp_worker.build().logit_scale.item()) > 1e-3  # it trained


def test_fsdp_clip_checkpoint_is_full(clip_runs):
    ck = clip_runs / "fsdp" / "checkpoints" / f"step-{CLIP_STEPS:06d}"
    weights, reference = _weights(clip_runs / "fsdp", CLIP_STEPS), clip_ddp_worker.build().state_dict()
    assert weights.keys() == reference.keys()
    assert all(weights[k].shape == reference[k].shape for k in weights)  # unsharded; the logit scale 0-d
    for tower in ("backbone.", "text_backbone."):
        assert any(k.startswith(tower + "blocks.") for k in weights), tower
    optim = torch.load(ck / "state.pt", weights_only=False)["optimizer"]["state"]
    assert optim["logit_scale"]["exp_avg"].shape == ()
    assert {"logit_scale", "text_backbone.blocks.1.mlp.fc2.weight", "backbone.blocks.1.mlp.fc2.weight"} <= set(optim)
    for rank in (0, 1):  # the caller's task got them back, its logit scale 0-d again
        gathered = torch.load(clip_runs / "fsdp" / f"gathered-{rank}.pt", weights_only=True)
        assert_weights_close(gathered, weights, atol=0)


def test_fsdp_clip_resume_is_exact(clip_runs):
    assert_same_losses(clip_runs / "resumed", clip_runs / "fsdp", CLIP_STEPS)
    resumed_weights = _weights(clip_runs / "resumed", CLIP_STEPS)
    assert_weights_close(resumed_weights, _weights(clip_runs / "fsdp", CLIP_STEPS), atol=1e-6)


def test_fsdp_clip_checkpoint_continues_without_fsdp(clip_runs, tmp_path):
    """The FSDP checkpoint at step 2 continues in one plain process as the plain run did."""
    run = _killed_copy(clip_runs / "fsdp", tmp_path / "plain", CLIP_STEPS)
    with pytest.warns(UserWarning, match="RNGs reseeded"):
        clip_fsdp_worker.main(str(run), devices=1, resume=True)
    assert_same_losses(run, clip_runs / "single")
    assert_weights_close(_weights(run, CLIP_STEPS), _weights(clip_runs / "single", CLIP_STEPS), atol=1e-5)
