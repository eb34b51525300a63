"""``losses/regression.py``: data2vec's ``masked_smooth_l1`` against the piecewise formula written
out per element (by hand on a tiny input and by loops on random ones, ``beta = 0`` the squared
error), its gradient, the empty mask, float32 for low-precision inputs, clear errors."""

import pytest
import torch

from convergent.losses.regression import masked_smooth_l1


def smooth_l1(e: float, beta: float) -> float:
    """0.5 e² / beta inside |e| <= beta, |e| - 0.5 beta outside; e² for beta = 0 (fairseq)."""
    if beta == 0:
        return e * e
    return 0.5 * e * e / beta if abs(e) <= beta else abs(e) - 0.5 * beta


def smooth_l1_slope(e: float, beta: float) -> float:
    """d smooth_l1 / d e."""
    if beta == 0:
        return 2 * e
    return e / beta if abs(e) <= beta else (1.0 if e > 0 else -1.0)


def reference(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, beta: float) -> float:
    """Mean over selected positions of the mean over D, by loops. (B, N, D) / (B, N)."""
    total, count = 0.0, 0
    for pb, tb, mb in zip(pred.tolist(), target.tolist(), mask.tolist()):
        for p, t, selected in zip(pb, tb, mb):
            if selected:
                total += sum(smooth_l1(a - b, beta) for a, b in zip(p, t)) / len(p)
                count += 1
    return total / max(count, 1)


def test_masked_smooth_l1_against_reference():
    pred = torch.tensor([[[0.0, 0.0], [1.0, -3.0]], [[0.5, 0.0], [9.0, 9.0]]])
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True], [True, False]])

    for beta in (0.0, 2.0, 4.0):
        errors = [[1.0, 0.0], [1.0, -3.0], [0.5, 0.0]]  # the selected positions' errors
        expected = sum(sum(smooth_l1(e, beta) for e in row) / 2 for row in errors) / 3
        assert masked_smooth_l1(pred, target, mask, beta).item() == pytest.approx(expected)
    assert masked_smooth_l1(pred, target, torch.zeros(2, 2, dtype=torch.bool), 2.0).item() == 0.0


@pytest.mark.parametrize("beta", [0.0, 0.5, 2.0])
def test_random_inputs_and_gradient(beta):
    pred, target = torch.randn(3, 7, 10, requires_grad=True), torch.randn(3, 7, 10)  # errors on both sides of beta
    mask = torch.rand(3, 7) < 0.6  # (B, N)
    loss = masked_smooth_l1(pred, target, mask, beta)
    assert loss.item() == pytest.approx(reference(pred.detach(), target, mask, beta), abs=1e-6, rel=1e-6)
    loss.backward()
    # d/dpred = slope(e) / D / selected positions at selected positions, 0 elsewhere
    e = (pred.detach() - target).tolist()
    slope = torch.tensor([[[smooth_l1_slope(x, beta) for x in row] for row in rows] for rows in e])
    want = slope * mask[..., None] / 10 / mask.sum()
    torch.testing.assert_close(pred.grad, want, atol=1e-9, rtol=1e-6)


def test_empty_mask_is_zero_with_zero_gradient():
    pred = torch.randn(2, 3, 4, requires_grad=True)
    loss = masked_smooth_l1(pred, torch.randn(2, 3, 4), torch.zeros(2, 3), 1.0)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(pred.grad, torch.zeros_like(pred))


def test_low_precision_inputs_are_computed_in_float32():
    pred, target = torch.randn(2, 3, 4).bfloat16(), torch.randn(2, 3, 4).bfloat16()
    mask = torch.tensor([[True, False, True], [True, True, True]])
    loss = masked_smooth_l1(pred, target, mask, 1.0)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference(pred.float(), target.float(), mask, 1.0), abs=1e-6, rel=1e-6)


def test_clear_errors():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="differ in shape"):
        masked_smooth_l1(x, x[..., :3], torch.ones(2, 3), 1.0)
    with pytest.raises(ValueError, match="does not match positions"):
        masked_smooth_l1(x, x, torch.ones(2, 4), 1.0)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        masked_smooth_l1(x, x, torch.ones(2, 3), -0.1)
