"""FSDP2 on CPU (gloo): 2 sharded processes reproduce 1 process; checkpoints hold full state,
resume exactly under FSDP, and open without it. Launched with ``torch.distributed.run``."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from convergent.training.fsdp import OPTIMIZER_FORMAT, block_modules
from tests import ddp_worker
from tests.training_helpers import assert_weights_close, build, read_metrics

WORKER = Path(ddp_worker.__file__)
STEPS = ddp_worker.STEPS


def _launch(run_dir: Path, *args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(WORKER), str(run_dir), "2", "1", "fsdp", *args]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _weights(run_dir: Path, step: int = STEPS) -> dict:
    return load_file(str(run_dir / "checkpoints" / f"step-{step:06d}" / "model.safetensors"))


def test_block_modules_are_the_transformer_blocks():
    task = build()
    units = block_modules(task)
    assert units and all(type(u).__name__ == "Block" for u in units)
    assert len(units) == len(task.backbone.blocks)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    _launch(root / "fsdp")  # straight through, checkpoints at 3 and 6
    # as if killed after step 3: drop the last checkpoint and the trained weights, resume under FSDP
    shutil.copytree(root / "fsdp", root / "resumed")
    shutil.rmtree(root / "resumed" / "checkpoints" / f"step-{STEPS:06d}")
    for f in (root / "resumed").glob("gathered-*.pt"):
        f.unlink()
    _launch(root / "resumed", str(STEPS), "resume")
    ddp_worker.main(str(root / "single"), devices=1, accumulate=2)  # 1 process x 2 micro-batches of 4
    return root


def test_fsdp_two_processes_match_one(runs):
    fsdp, ref = read_metrics(runs / "fsdp"), read_metrics(runs / "single")
    assert [m["step"] for m in fsdp] == list(range(1, STEPS + 1))
    for a, b in zip(fsdp, ref, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-6, (a["step"], a["loss"], b["loss"])
    assert len({round(m["loss"], 6) for m in ref}) == len(ref)  # the losses change: a real comparison
    assert_weights_close(_weights(runs / "fsdp"), _weights(runs / "single"), atol=1e-5)


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
    straight, resumed = read_metrics(runs / "fsdp"), read_metrics(runs / "resumed")
    assert [m["step"] for m in resumed] == list(range(1, STEPS + 1))
    for a, b in zip(straight, resumed, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-6, (a["step"], a["loss"], b["loss"])
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
