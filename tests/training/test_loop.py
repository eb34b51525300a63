"""The loop: gradient accumulation, non-finite losses, batch divisibility, logging, summary."""

import json
import math

import pytest
import torch

from convergent.training.callbacks import Callback
from convergent.training.loop import Trainer, micro_batch_size
from convergent.training.sampler import ResumableSampler
from tests.training_helpers import (
    RegressTask,
    SyntheticImages,
    assert_weights_close,
    build,
    configs,
    eval_transform,
    random_transform,
    read_metrics,
)


def _trainer(run_dir, batch_size=8, num_workers=0, **cfg):
    return Trainer(*configs(**cfg), run_dir, batch_size=batch_size, num_workers=num_workers, progress=False)


def test_accumulation_matches_one_big_batch(tmp_path):
    """Also: DataLoader worker processes (acc=2 run) do not change the data order."""
    results = {}
    for acc in (1, 2):
        trainer = _trainer(tmp_path / str(acc), max_steps=4, optim_accumulate=acc, num_workers=2 * (acc - 1))
        assert trainer.micro_batch == 8 // acc
        task = build(RegressTask)
        trainer.fit(task, SyntheticImages(32), eval_transform)
        results[acc] = (read_metrics(tmp_path / str(acc)), task.state_dict(), task.calls)
    (m1, w1, calls1), (m2, w2, calls2) = results[1], results[2]
    assert (calls1, calls2) == (4, 8)  # really two micro-batches per step
    for a, b in zip(m1, m2, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-6, a["step"]
    assert_weights_close(w1, w2, atol=1e-6)
    assert not torch.equal(w1["head.weight"], build(RegressTask).state_dict()["head.weight"])  # it trained


class Snapshot(Callback):
    def __init__(self):
        self.weights, self.metrics = {}, {}

    def on_step_end(self, trainer, task, step, metrics):
        self.weights[step] = {k: v.clone() for k, v in task.state_dict().items()}
        self.metrics[step] = metrics


def test_nonfinite_skip_counts_and_continues(tmp_path):
    trainer = _trainer(tmp_path, max_steps=4, nonfinite="skip")
    snap = Snapshot()
    with pytest.warns(UserWarning, match="non-finite loss .* at step 2: update skipped"):
        summary = trainer.fit(build(RegressTask, nan_at_call=2), SyntheticImages(32), eval_transform, callbacks=[snap])
    assert summary["nonfinite_steps"] == 1 and summary["steps"] == 4
    assert all(torch.equal(snap.weights[1][k], snap.weights[2][k]) for k in snap.weights[1])  # no update
    assert not torch.equal(snap.weights[2]["head.weight"], snap.weights[3]["head.weight"])  # then it goes on
    assert all(torch.isfinite(v).all() for v in snap.weights[4].values())
    losses = [m["loss"] for m in read_metrics(tmp_path)]
    assert losses[1] is None and all(math.isfinite(x) for x in losses[:1] + losses[2:])
    assert snap.metrics[4]["nonfinite_steps"] == 1
    assert math.isfinite(summary["final_loss"])


def test_nonfinite_stop_raises_naming_the_step(tmp_path):
    trainer = _trainer(tmp_path, max_steps=4, nonfinite="stop")
    with pytest.raises(RuntimeError, match=r"non-finite loss \(nan\) at step 3.*nonfinite='stop'"):
        trainer.fit(build(RegressTask, nan_at_call=3), SyntheticImages(32), eval_transform)
    assert trainer.step == 2


def test_batch_divisibility_errors(tmp_path):
    assert micro_batch_size(8, 2, 2) == 2
    with pytest.raises(ValueError, match=r"batch_size 6 cannot be split evenly over 4 process\(es\) x 1"):
        micro_batch_size(6, 4, 1)
    with pytest.raises(ValueError, match="multiple of 3"):
        _trainer(tmp_path, optim_accumulate=3)
    with pytest.raises(ValueError, match="fewer than one batch of 8"):
        _trainer(tmp_path).fit(build(), SyntheticImages(5), eval_transform)
    with pytest.raises(ValueError, match="'skip' or 'stop'"):
        _trainer(tmp_path, nonfinite="ignore")


class Ends(Callback):
    calls = 0

    def on_fit_end(self, trainer, task):
        Ends.calls += 1
        assert trainer.step == 5 and trainer.summary["steps"] == 5


def test_summary_logging_and_plain_progress(tmp_path, capsys):
    bad = [(f"bad/{i}.png", "cannot decode") for i in range(12)]
    trainer = Trainer(*configs(max_steps=5, log_every=2), tmp_path, batch_size=8)
    summary = trainer.fit(build(RegressTask), SyntheticImages(24, skipped=bad), random_transform, callbacks=[Ends()])
    assert Ends.calls == 1
    assert summary == json.loads((tmp_path / "summary_train.json").read_text())
    assert summary["skipped_samples"] == 12 and summary["skipped_examples"][0] == "bad/0.png: cannot decode"
    assert len(summary["skipped_examples"]) == 10
    assert (summary["steps"], summary["world_size"], summary["epochs"]) == (5, 1, 5 / 3)
    assert summary["mean_loss_last_10pct"] == summary["final_loss"] == read_metrics(tmp_path)[-1]["loss"]
    assert summary["samples_per_s"] > 0 and summary["checkpoint"].endswith("step-000005")
    records = read_metrics(tmp_path)
    assert [m["step"] for m in records] == [2, 4, 5]  # every log_every steps and the last
    assert {"loss", "mse", "ratio", "lr", "grad_norm", "samples_per_s", "elapsed_s"} <= records[0].keys()
    assert records[0]["ratio"] == 0.5
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("step ")]
    assert len(lines) == 3 and lines[0].startswith("step 2/5 loss")  # one plain line per logged step
    assert any((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_sampler_shares_and_resume_offset():
    one = ResumableSampler(20, micro_batch=4, accumulate=2, world_size=1, rank=0, seed=3)
    two = [ResumableSampler(20, micro_batch=2, accumulate=2, world_size=2, rank=r, seed=3) for r in (0, 1)]
    assert one.steps_per_epoch == two[0].steps_per_epoch == 2  # 20 // 8; the tail of 4 is dropped
    for epoch in (0, 1):
        for s in [one, *two]:
            s.set_epoch(epoch)
        ref, shares = list(one), [list(s) for s in two]
        assert len(set(ref)) == 16 and len(ref) == len(one)
        for j in range(4):  # global micro-batch j = the union of the ranks' micro-batches j
            assert sorted(ref[4 * j : 4 * j + 4]) == sorted(shares[0][2 * j : 2 * j + 2] + shares[1][2 * j : 2 * j + 2])
    one.set_epoch(0)
    first = list(one)
    one.set_epoch(1)
    assert list(one) != first  # reshuffled per epoch
    one.set_epoch(0, start=2)
    assert list(one) == first[8:] and len(one) == 8  # resume: skipped indices are never produced


def test_views_are_passed_their_index(tmp_path):
    """A task declaring num_views = 3: the transform is called for views 0, 1, 2 of each batch
    (view 0 without the keyword, so two-argument transforms serve one-view tasks)."""

    class ThreeViews(RegressTask):
        num_views = 3
        batch_keys = ("image", "image2", "image3", "label")

    calls = []

    def transform(images, generator, view=0):
        calls.append(view)
        return eval_transform(images, generator) + view

    task = build(ThreeViews)
    seen = []
    forward = task.forward
    task.forward = lambda batch: seen.append({k: batch[k].mean().item() for k in ("image", "image2", "image3")}) \
        or forward(batch)  # fmt: skip
    _trainer(tmp_path / "run", max_steps=2).fit(task, SyntheticImages(16), transform)
    assert calls == [0, 1, 2, 0, 1, 2]
    assert all(s["image2"] - s["image"] == pytest.approx(1) and s["image3"] - s["image"] == pytest.approx(2) for s in seen)
