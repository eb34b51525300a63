"""``losses/moco.py``: MoCo v3's ``ctr`` against the paper's pseudo-code written out by hand
(values at several temperatures, gradients, scale invariance), ``symmetric_ctr`` as the sum of
its parts, and ``ctr`` across 2 gloo processes (keys all-gathered, labels offset by rank)."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from convergent.losses.moco import ctr, symmetric_ctr


def paper_ctr(q: torch.Tensor, k: torch.Tensor, tau: float) -> torch.Tensor:
    """Alg. 1 by hand, element by element on ``(B, D)`` tensors (differentiable): q̂, k̂ = rows
    over their norms, logits = q̂ k̂ᵀ, labels = range(N), CrossEntropy(logits / τ) · 2τ."""
    unit = [row / sum(x * x for x in row).sqrt() for row in torch.cat([q, k])]
    qn, kn = unit[: len(q)], unit[len(q) :]
    total = 0.0
    for i, qi in enumerate(qn):
        logits = [sum(a * b for a, b in zip(qi, kj)) / tau for kj in kn]
        total = total + sum(z.exp() for z in logits).log() - logits[i]
    return 2 * tau * total / len(q)


def test_ctr_matches_the_papers_pseudo_code():
    q, k = torch.randn(5, 3), torch.randn(5, 3)
    for tau in (0.2, 1.0):
        assert ctr(q, k, tau).item() == pytest.approx(paper_ctr(q.double(), k.double(), tau).item(), rel=1e-5)
    # scale-free (normalised), and gradients reach both queries and keys in one process
    q.requires_grad_(True), k.requires_grad_(True)
    loss = ctr(3 * q, 0.5 * k, 0.2)
    torch.testing.assert_close(loss, ctr(q, k, 0.2))
    loss.backward()
    assert q.grad.abs().sum() > 0 and k.grad.abs().sum() > 0


@pytest.mark.parametrize("tau", [0.05, 0.2, 1.0])
def test_ctr_value_and_gradients_match_the_pseudo_code(tau):
    """Against autograd through the written-out formula in float64, queries and keys
    of different norms (the normalisation is differentiated too)."""
    q = (torch.randn(6, 4) * torch.rand(6, 1) * 3).requires_grad_(True)  # (B, D)
    k = (torch.randn(6, 4) * torch.rand(6, 1) * 3).requires_grad_(True)
    qd, kd = q.detach().double().requires_grad_(True), k.detach().double().requires_grad_(True)
    ref = paper_ctr(qd, kd, tau)
    ref.backward()
    loss = ctr(q, k, tau)
    loss.backward()
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(ref.item(), abs=1e-6, rel=1e-6)
    torch.testing.assert_close(q.grad, qd.grad.float(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(k.grad, kd.grad.float(), atol=1e-6, rtol=1e-5)


def test_symmetric_ctr():
    q1, q2, k1, k2 = torch.randn(4, 4, 8).unbind(0)
    got = symmetric_ctr(q1, q2, k1, k2, 0.2)
    torch.testing.assert_close(got, ctr(q1, k2, 0.2) + ctr(q2, k1, 0.2))
    torch.testing.assert_close(got, symmetric_ctr(q2, q1, k2, k1, 0.2))  # the views' order does not matter
    with pytest.raises(ValueError, match="temperature must be > 0"):
        ctr(q1, k1, 0.0)
    with pytest.raises(ValueError, match=r"must both be \(B, D\)"):
        ctr(q1, k1[:3], 0.2)


def test_symmetric_ctr_against_the_pseudo_code():
    q1, q2, k1, k2 = torch.randn(4, 5, 6).unbind(0)
    ref = paper_ctr(q1.double(), k2.double(), 0.3) + paper_ctr(q2.double(), k1.double(), 0.3)
    assert symmetric_ctr(q1, q2, k1, k2, 0.3).item() == pytest.approx(ref.item(), abs=1e-6, rel=1e-6)


def _ddp_ctr(rank: int, tmp: str, q: torch.Tensor, k: torch.Tensor) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=rank, world_size=2)
    try:
        b = q.shape[0] // 2
        local_q = q[rank * b : (rank + 1) * b].clone().requires_grad_(True)
        loss = ctr(local_q, k[rank * b : (rank + 1) * b], 0.2)
        loss.backward()
        torch.save((loss.detach(), local_q.grad), f"{tmp}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ctr_all_gathers_keys_across_processes(tmp_path):
    """2 processes x 3 queries, keys gathered with labels offset by rank·B: the mean of the
    local losses is the 1-process loss on all 6, and so is the gradient (DDP averages)."""
    q, k = torch.randn(6, 4), torch.randn(6, 4)
    mp.spawn(_ddp_ctr, args=(str(tmp_path), q, k), nprocs=2)
    out = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    full_q = q.clone().requires_grad_(True)
    full = ctr(full_q, k, 0.2)
    full.backward()
    assert (out[0][0] + out[1][0]).item() / 2 == pytest.approx(full.item(), rel=1e-5)
    assert out[0][0].item() != pytest.approx(ctr(q[:3], k[:3], 0.2).item())  # the other process's keys counted
    torch.testing.assert_close(torch.cat([out[0][1], out[1][1]]) / 2, full_q.grad)
