"""``losses/language.py``: ``token_cross_entropy`` against a hand-written log-softmax per token
(by hand on a tiny input, by loops on random ones with label smoothing and another ignore
index), its gradient, accuracy and count, nothing to predict, float32 for low-precision
logits, a clear shape error."""

import math

import pytest
import torch
import torch.nn.functional as F

from convergent.losses.language import IGNORE_INDEX, token_cross_entropy


def reference(logits: torch.Tensor, labels: torch.Tensor, smoothing: float, ignore: int) -> tuple[float, float, int]:
    """Loss, accuracy, count over counted tokens, by loops. Per token with log-probabilities
    lp = z - logsumexp(z): (1 - ε)·(-lp[y]) + ε·mean_v(-lp[v]) (label smoothing as F.cross_entropy)."""
    total, hits, count = 0.0, 0, 0
    for z, y in zip(logits.reshape(-1, logits.shape[-1]).tolist(), labels.flatten().tolist()):
        if y == ignore:
            continue
        top = max(z)
        log_z = top + math.log(sum(math.exp(v - top) for v in z))
        lp = [v - log_z for v in z]
        total += (1 - smoothing) * -lp[y] + smoothing * -sum(lp) / len(lp)
        hits += z.index(top) == y
        count += 1
    return total / max(count, 1), hits / max(count, 1), count


def test_token_cross_entropy_by_hand():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0, 0.0, 3.0], [1.0, 1.0, 1.0]]])
    labels = torch.tensor([[0, -100], [1, 2]])
    want = [-F.log_softmax(logits[i, j], -1)[t] for (i, j), t in (((0, 0), 0), ((1, 0), 1), ((1, 1), 2))]
    loss, acc, n = token_cross_entropy(logits, labels)
    assert loss.item() == pytest.approx(sum(w.item() for w in want) / 3)
    assert acc.item() == pytest.approx(1 / 3) and n.item() == 3  # only [0, 0] is argmax-right
    empty = token_cross_entropy(logits.requires_grad_(), torch.full((2, 2), -100))
    assert empty[0].item() == 0.0 and empty[0].requires_grad and empty[2].item() == 0


@pytest.mark.parametrize("smoothing, ignore", [(0.0, IGNORE_INDEX), (0.1, IGNORE_INDEX), (0.0, 0), (0.2, 3)])
def test_random_inputs_match_reference(smoothing, ignore):
    logits = torch.randn(3, 8, 11) * 3  # (B, L, V)
    labels = torch.randint(0, 11, (3, 8))
    labels[torch.rand(3, 8) < 0.3] = ignore
    loss, acc, n = token_cross_entropy(logits, labels, label_smoothing=smoothing, ignore_index=ignore)
    want_loss, want_acc, want_n = reference(logits, labels, smoothing, ignore)
    assert loss.item() == pytest.approx(want_loss, abs=1e-6, rel=1e-6)
    assert acc.item() == pytest.approx(want_acc, abs=1e-7) and n.item() == want_n
    assert not acc.requires_grad


def test_gradient_is_softmax_minus_one_hot_over_counted_tokens():
    logits = torch.randn(2, 5, 7, requires_grad=True)  # (B, L, V)
    labels = torch.tensor([[1, 6, -100, 0, 2], [-100, -100, 3, 3, 5]])
    loss, _, n = token_cross_entropy(logits, labels)
    loss.backward()
    counted = labels != IGNORE_INDEX
    p = logits.detach().exp() / logits.detach().exp().sum(-1, keepdim=True)  # softmax by hand
    one_hot = torch.zeros(2, 5, 7)
    for (i, j) in counted.nonzero().tolist():
        one_hot[i, j, labels[i, j]] = 1.0
    want = (p - one_hot) * counted[..., None] / n  # ignored tokens get no gradient
    torch.testing.assert_close(logits.grad, want, atol=1e-8, rtol=1e-6)


def test_low_precision_logits_are_computed_in_float32():
    logits, labels = torch.randn(4, 9).bfloat16(), torch.randint(0, 9, (4,))
    loss, acc, n = token_cross_entropy(logits, labels)
    assert loss.dtype == acc.dtype == n.dtype == torch.float32
    assert loss.item() == pytest.approx(reference(logits.float(), labels, 0.0, IGNORE_INDEX)[0], abs=1e-6, rel=1e-6)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expected \(\.\.\., V\)"):
        token_cross_entropy(torch.randn(2, 5, 7), torch.zeros(2, 4, dtype=torch.long))
