"""``losses/contrastive.py`` against a hand-written InfoNCE: ``info_nce`` at several offsets and
inverse temperatures, with its textbook gradients; ``clip_loss`` as the symmetric InfoNCE, with
gradients; the single-process paths of the distributed helpers; float32 under autocast; shape
errors. Several processes: ``tests/tasks/test_clip_ddp.py`` (``clip_loss`` through the CLIP task) and
``tests/losses/test_moco.py`` (``ctr``, the ``with_grad=False`` gather)."""

import math

import pytest
import torch

from convergent.losses.contrastive import clip_loss, gather_features, info_nce, world


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _reference_info_nce(q: torch.Tensor, k: torch.Tensor, scale: float, offset: int = 0) -> torch.Tensor:
    """-log(exp(s q_i.k_{i+o}) / sum_j exp(s q_i.k_j)), averaged, written out element by element."""
    total = 0.0
    for i in range(q.shape[0]):
        sims = [scale * float(q[i] @ k[j]) for j in range(k.shape[0])]
        top = max(sims)
        log_z = top + math.log(sum(math.exp(s - top) for s in sims))
        total += log_z - sims[i + offset]
    return torch.tensor(total / q.shape[0])


def _reference_info_nce_grads(
    q: torch.Tensor, k: torch.Tensor, scale: float, offset: int = 0
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Textbook gradients of the mean InfoNCE, in float64. With p_ij = softmax_j(s q_i.k_j) and
    t_i = i + offset: d/dq_i = s/B sum_j (p_ij - [j = t_i]) k_j, d/dk_j = s/B sum_i (p_ij -
    [j = t_i]) q_i, d/ds = 1/B sum_i sum_j (p_ij - [j = t_i]) q_i.k_j."""
    q, k = q.double(), k.double()
    b, n = q.shape[0], k.shape[0]
    dq, dk, ds = torch.zeros_like(q), torch.zeros_like(k), 0.0
    for i in range(b):
        sims = [float(q[i] @ k[j]) for j in range(n)]
        top = max(sims)
        e = [math.exp(scale * (s - top)) for s in sims]
        for j in range(n):
            w = e[j] / sum(e) - (j == i + offset)  # p_ij - [j = t_i]
            dq[i] += scale / b * w * k[j]
            dk[j] += scale / b * w * q[i]
            ds += w * sims[j] / b
    return dq, dk, ds


def test_info_nce_matches_reference():
    q, k = _unit(5, 8, 0), _unit(12, 8, 1)
    for offset in (0, 3, 7):
        torch.testing.assert_close(info_nce(q, k, 7.5, offset), _reference_info_nce(q, k, 7.5, offset), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="need at least"):
        info_nce(q, k, 1.0, offset=8)


@pytest.mark.parametrize("scale", [1.0, 1 / 0.07, 100.0])
def test_info_nce_value_and_gradients_at_several_temperatures(scale):
    q, k = _unit(5, 8, 2).requires_grad_(True), _unit(9, 8, 3).requires_grad_(True)
    s = torch.tensor(scale, requires_grad=True)  # a learned logit scale gets a gradient too
    loss = info_nce(q, k, s, offset=2)
    loss.backward()
    ref = _reference_info_nce(q.detach(), k.detach(), scale, 2)
    torch.testing.assert_close(loss, ref, atol=1e-6, rtol=1e-6)
    dq, dk, ds = _reference_info_nce_grads(q.detach(), k.detach(), scale, 2)
    # the gradients grow with s (up to ~25 at s = 100): fp32 rounding of the logits grows with them
    torch.testing.assert_close(q.grad, dq.float(), atol=1e-7 * scale, rtol=1e-5)
    torch.testing.assert_close(k.grad, dk.float(), atol=1e-7 * scale, rtol=1e-5)
    assert s.grad.item() == pytest.approx(ds, abs=1e-6, rel=1e-5)


def test_info_nce_bad_shapes():
    q = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"must be \(B, D\) and \(N, D\)"):
        info_nce(q, torch.randn(3, 5), 1.0)
    with pytest.raises(ValueError, match=r"must be \(B, D\) and \(N, D\)"):
        info_nce(q[None], torch.randn(3, 4), 1.0)


def test_clip_loss_is_the_symmetric_info_nce():
    image, text = _unit(6, 8, 2), _unit(6, 8, 3)
    out = clip_loss(image, text, 14.0)
    ref = (_reference_info_nce(image, text, 14.0) + _reference_info_nce(text, image, 14.0)) / 2
    torch.testing.assert_close(out.loss, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.logits_per_text, out.logits_per_image.T)
    assert torch.equal(out.labels, torch.arange(6))
    # local_loss without a process group is the same computation
    torch.testing.assert_close(clip_loss(image, text, 14.0, local_loss=True).loss, out.loss)
    # matched pairs score low, shuffled ones high
    assert clip_loss(image, image, 50.0).loss < 0.01 < clip_loss(image, image.roll(1, 0), 50.0).loss


def test_clip_loss_gradients_match_reference():
    """d/d image = (its gradient as the queries of image->text + as the keys of text->image) / 2."""
    image, text = _unit(6, 8, 4).requires_grad_(True), _unit(6, 8, 5).requires_grad_(True)
    out = clip_loss(image, text, 20.0)
    out.loss.backward()
    dq_it, dk_it, _ = _reference_info_nce_grads(image.detach(), text.detach(), 20.0)  # image queries
    dq_ti, dk_ti, _ = _reference_info_nce_grads(text.detach(), image.detach(), 20.0)  # text queries
    torch.testing.assert_close(image.grad, ((dq_it + dk_ti) / 2).float(), atol=2e-6, rtol=1e-6)
    torch.testing.assert_close(text.grad, ((dk_it + dq_ti) / 2).float(), atol=2e-6, rtol=1e-6)
    # logits are the scaled cosine similarities, labels the diagonal
    torch.testing.assert_close(out.logits_per_image, 20.0 * image.detach() @ text.detach().T)


def test_single_process_helpers():
    x = torch.randn(3, 4)
    assert world() == (0, 1)
    assert gather_features(x) is x and gather_features(x, with_grad=False) is x


def test_clip_loss_without_distribution_is_the_same_outside_a_process_group():
    image, text = _unit(5, 8, 6), _unit(5, 8, 7)
    for local in (False, True):
        for with_grad in (False, True):
            got = clip_loss(image, text, 10.0, local_loss=local, distributed=False, gather_with_grad=with_grad)
            assert torch.equal(got.loss, clip_loss(image, text, 10.0).loss)
    with pytest.raises(ValueError, match=r"must both be \(B, D\)"):
        clip_loss(image, text[:4], 10.0)


def test_loss_runs_in_float32_under_autocast():
    image, text = _unit(4, 8, 4), _unit(4, 8, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = clip_loss(image.bfloat16(), text.bfloat16(), torch.tensor(30.0))
    assert out.loss.dtype == out.logits_per_image.dtype == torch.float32
