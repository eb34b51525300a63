"""CLIP under torch.distributed (gloo, CPU): 2 processes x 4 pairs reproduce 1 process x 8
pairs — the loss and the DDP-averaged gradients — because features are gathered with their
gradient; a gather without gradient does not (so the comparison can fail). The same for the
losses alone: NT-Xent (gathered views) and SigLIP (text chunks exchanged around the ring)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests import clip_ddp_worker as worker
from tests import contrastive_ddp_worker as loss_worker

WORKER = Path(worker.__file__)


def _max_rel(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(((a[k] - b[k]).norm() / b[k].norm().clamp_min(1e-12)).item() for k in b)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("clip_ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {m: torch.load(out / f"{m}.pt", weights_only=True) for m in worker.MODES}


@pytest.fixture(scope="module")
def reference():
    """One process, the whole global batch."""
    task = worker.build()
    loss = task(worker.global_batch())["loss"]
    loss.backward()
    return loss.detach(), worker.grads(task)


@pytest.mark.parametrize("mode", ["global", "local"])
def test_two_processes_match_one(runs, reference, mode):
    ref_loss, ref_grads = reference
    run = runs[mode]
    assert abs(run["loss"].item() - ref_loss.item()) <= 1e-6
    if mode == "global":  # every process computes the global loss
        assert (run["losses"] - ref_loss).abs().max().item() <= 1e-6
    else:  # each its share; the shares differ
        assert (run["losses"][0] - run["losses"][1]).abs().item() > 1e-3
    assert run["grads"].keys() == ref_grads.keys()
    assert max((run["grads"][k] - ref_grads[k]).abs().max().item() for k in ref_grads) <= 1e-5
    assert _max_rel(run["grads"], ref_grads) <= 1e-4
    # both towers, the projections and the temperature take part
    for name in ("backbone.patch_embed.proj.weight", "text_backbone.word_embed.weight", "image_proj.weight",
                 "text_proj.weight", "logit_scale"):  # fmt: skip
        assert ref_grads[name].abs().sum() > 0, name


def test_gather_without_gradient_differs(runs, reference):
    ref_loss, ref_grads = reference
    run = runs["nograd"]
    assert abs(run["loss"].item() - ref_loss.item()) <= 1e-6  # the same value ...
    tower = {k: v for k, v in ref_grads.items() if k != "logit_scale"}
    assert _max_rel({k: run["grads"][k] for k in tower}, tower) > 0.1  # ... but not the same update


# --- the losses of SimCLR and SigLIP across processes ------------------------------------------------


@pytest.fixture(scope="module")
def loss_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("contrastive_ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(loss_worker.__file__)), str(out)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {m: torch.load(out / f"{m}.pt", weights_only=True) for m in loss_worker.LOSSES}


@pytest.mark.parametrize("name", loss_worker.LOSSES)
def test_distributed_losses_match_one_process(loss_runs, name):
    """NT-Xent (views gathered with gradient) and SigLIP (text chunks around the ring): the mean
    of the processes' losses is the single-process loss of the concatenated batch, and each
    process's local feature gradients, averaged as DDP does (/ W), are the single-process ones."""
    run = loss_runs[name]
    full = loss_worker.leaves(loss_worker.global_features())
    ref = loss_worker.loss_of(name, full)
    ref.backward()
    world = run["losses"].numel()
    assert abs(run["losses"].mean().item() - ref.item()) <= 1e-5
    assert (run["losses"][0] - run["losses"][1]).abs().item() > 1e-4  # each process its share
    for k in ("a", "b"):
        torch.testing.assert_close(run["grads"][k] / world, full[k].grad, atol=1e-6, rtol=1e-5)
    if name == "siglip":
        for k in ("scale", "bias"):
            torch.testing.assert_close(run["scalars"][k], full[k].grad, atol=1e-6, rtol=1e-5)
