"""The EMA vector quantiser against a hand-written version of DeepMind sonnet 2's
``VectorQuantizerEMA`` construction (row by row, no one-hot algebra), its straight-through
gradient, Jukebox-style restarts of dead codes, and two processes equal to one."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convergent.layers.quantize import VectorQuantizer
from tests import quantize_ddp_worker as worker


class SonnetReference:
    """sonnet 2 ``VectorQuantizerEMA``, written out: nearest code per row; zero-debiased EMAs
    (hidden states from zero, divided by ``1 - decay^t``) of counts and sums; Laplace-smoothed
    counts; codes = sums / smoothed counts."""

    def __init__(self, codebook: torch.Tensor, decay: float, commitment: float, eps: float):
        self.w = codebook.clone().double()  # (K, D)
        self.hidden_n = torch.zeros(len(codebook), dtype=torch.float64)
        self.hidden_w = torch.zeros_like(self.w)
        self.t = 0
        self.decay, self.beta, self.eps = decay, commitment, eps

    def step(self, x: torch.Tensor):
        x = x.double()
        ids = torch.tensor([min(range(len(self.w)), key=lambda k: float(((row - self.w[k]) ** 2).sum())) for row in x])
        q = self.w[ids]
        loss = self.beta * ((x - q) ** 2).mean()
        n = torch.zeros_like(self.hidden_n)
        s = torch.zeros_like(self.hidden_w)
        for row, k in zip(x, ids.tolist()):
            n[k] += 1
            s[k] += row
        self.t += 1
        self.hidden_n = self.hidden_n - (self.hidden_n - n) * (1 - self.decay)
        self.hidden_w = self.hidden_w - (self.hidden_w - s) * (1 - self.decay)
        avg_n = self.hidden_n / (1 - self.decay**self.t)
        avg_w = self.hidden_w / (1 - self.decay**self.t)
        total = avg_n.sum()
        smoothed = (avg_n + self.eps) / (total + len(self.w) * self.eps) * total
        self.w = avg_w / smoothed[:, None]
        p = n / n.sum()
        perplexity = torch.exp(-(p * torch.log(p + 1e-10)).sum())
        return ids, q, loss, perplexity


def test_training_steps_match_the_sonnet_construction():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 8, decay=0.9, commitment=0.25, eps=1e-5, restart_threshold=0.0).train()
    ref = SonnetReference(vq.codebook, 0.9, 0.25, 1e-5)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        x = torch.randn(2, 3, 5, 8, generator=g) * 1.5  # (..., D)
        out = vq(x)
        ids, q, loss, perplexity = ref.step(x.reshape(-1, 8))
        assert torch.equal(out.ids, ids.view(2, 3, 5))
        torch.testing.assert_close(out.quantized, q.float().view_as(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.commitment, loss.float(), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(out.perplexity, perplexity.float(), atol=1e-5, rtol=1e-5)
        assert out.usage == pytest.approx(len(set(ids.tolist())) / 16)
        torch.testing.assert_close(vq.codebook, ref.w.float(), atol=1e-5, rtol=1e-5)


def test_eval_mode_leaves_the_codebook_alone_and_lookup_inverts_ids():
    vq = VectorQuantizer(8, 4, restart_threshold=0.0).eval()
    before = vq.codebook.clone()
    out = vq(torch.randn(10, 4))
    assert torch.equal(vq.codebook, before) and torch.equal(vq.ema_count, torch.zeros(8))
    torch.testing.assert_close(vq.lookup(out.ids), out.quantized)  # the nearest codes (x + (q - x) rounds)
    with pytest.raises(ValueError, match=r"code ids must be in \[0, 8\), got 0..8"):
        vq.lookup(torch.tensor([0, 8]))
    with pytest.raises(ValueError, match="dim 4 got inputs of shape"):
        vq(torch.randn(3, 5))


def test_straight_through_gradient_plus_commitment():
    vq = VectorQuantizer(8, 4, commitment=0.5, restart_threshold=0.0).eval()
    x = torch.randn(6, 4, requires_grad=True)
    upstream = torch.randn(6, 4)
    out = vq(x)
    ((out.quantized * upstream).sum() + out.commitment).backward()
    q = vq.lookup(out.ids)
    expected = upstream + 0.5 * 2 * (x.detach() - q) / x.numel()
    torch.testing.assert_close(x.grad, expected)
    assert vq.codebook.grad is None and not vq.codebook.requires_grad


def test_dead_codes_restart_from_batch_rows_reproducibly():
    def run(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        torch.manual_seed(seed)
        vq = VectorQuantizer(32, 4, decay=0.99, restart_threshold=1.0).train()
        x = torch.randn(20, 4, generator=torch.Generator().manual_seed(5))
        ids = vq(x).ids  # the codes no row chose have a count of 0 < 1 after this step: they restart
        return vq.codebook.clone(), x, ids

    a, x, ids = run(0)
    b, _, _ = run(0)
    c, _, _ = run(1)
    assert torch.equal(a, b) and not torch.equal(a, c)  # the draw follows the global RNG
    rows = {tuple(r.tolist()) for r in x}
    unused = sorted(set(range(32)) - set(ids.tolist()))
    assert len(unused) >= 12 and all(tuple(a[k].tolist()) in rows for k in unused)  # each an input vector
    for k in set(ids.tolist()):  # a chosen code is the mean of its rows (debiased EMA after one step)
        torch.testing.assert_close(a[k], x[ids == k].mean(0), atol=1e-4, rtol=1e-4)


def test_only_dead_codes_restart():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 2, decay=0.5, eps=1e-5, restart_threshold=1.0).train()
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 10.0], [50.0, 50.0]]))
    vq.ema_sum.copy_(vq.codebook * 4)  # as after many steps (debiasing ~1) of 4 vectors per code
    vq.ema_count.fill_(4.0)
    vq.ema_steps.fill_(100)
    x = torch.tensor([[0.1, 0.0]] * 6 + [[10.0, 9.9]] * 6)  # codes 0 and 1 used; 2 and 3 decay to count 2
    vq(x)
    torch.testing.assert_close(vq.ema_count, torch.tensor([5.0, 5.0, 2.0, 2.0]))  # >= 1: nothing restarts
    torch.testing.assert_close(vq.codebook[2:], torch.tensor([[-10.0, 10.0], [50.0, 50.0]]), rtol=1e-5, atol=1e-3)
    vq(x)
    vq(x)  # counts of 2 and 3: 1.0, then 0.5 < 1 -> restarted from inputs
    count, sums = vq.ema_count, vq.ema_sum  # debiasing is 1 - 0.5^103 = 1
    live = sums[:2] / ((count[:2] + 1e-5) / (count.sum() + 4e-5) * count.sum())[:, None]
    torch.testing.assert_close(vq.codebook[:2], live)
    inputs = {tuple(r.tolist()) for r in x}
    assert all(tuple(r.tolist()) in inputs for r in vq.codebook[2:])


@pytest.mark.parametrize("bad, message", [
    (dict(num_codes=1), "num_codes >= 2"), (dict(decay=1.0), "decay must be in"), (dict(eps=0.0), "eps > 0"),
])  # fmt: skip
def test_bad_settings(bad, message):
    with pytest.raises(ValueError, match=message):
        VectorQuantizer(**{"num_codes": 8, "dim": 4, **bad})


def test_two_processes_hold_the_codebook_of_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(worker.__file__)), str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    one = worker.quantizer()
    for x in worker.global_batches():
        one(x)
    for r in ranks:
        torch.testing.assert_close(r["codebook"], one.codebook, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(r["ema_count"], one.ema_count)
    assert torch.equal(ranks[0]["restart_codebook"], ranks[1]["restart_codebook"])  # rank 0's draw everywhere
    local = worker.quantizer()  # without the sums over processes, a process's codebook differs
    for x in worker.global_batches():
        local(x.chunk(2)[0])
    assert not torch.allclose(local.codebook, one.codebook, atol=1e-4)
